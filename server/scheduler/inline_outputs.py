"""Output contents a bot sent inside its report, to be moved into the CAS.

A bot may put small outputs into the ActionResult it reports (``OutputFile.contents``,
``stdout_raw``, ``stderr_raw``) instead of uploading them before reporting
(docs/BOTS_PROTOCOL.md section 7): that saves it a FindMissingBlobs and a
BatchUpdateBlobs per action. The scheduler writes the blobs the CAS lacks before it
records the result, and the contents leave the result here: clients get digests, as
REv2 asks of a server that nobody asked to inline.
"""

from __future__ import annotations

from cas.digest import Digest
from cas.errors import InvalidArgument, ReapiError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


def take_inline_outputs(result: re_pb2.ActionResult, function: int) -> dict[Digest, bytes]:
    """Remove inline contents from ``result``; return them by digest.

    INVALID_ARGUMENT if an inline file's digest is malformed or names another size
    (the hash itself is checked by the CAS on write)."""
    blobs: dict[Digest, bytes] = {}
    for output in result.output_files:
        if not output.contents:
            continue
        digest = _digest(output.digest, function, f"output file {output.path!r}")
        if digest.size_bytes != len(output.contents):
            raise InvalidArgument(
                f"output file {output.path!r}: {len(output.contents)} bytes inline, but its digest says {digest.size_bytes}"
            )
        blobs[digest] = output.contents
        output.ClearField("contents")
    for raw_field, digest_field in (("stdout_raw", "stdout_digest"), ("stderr_raw", "stderr_digest")):
        data: bytes = getattr(result, raw_field)
        if not data:
            continue
        if result.HasField(digest_field):
            digest = _digest(getattr(result, digest_field), function, digest_field)
            if digest.size_bytes != len(data):
                raise InvalidArgument(f"{raw_field} has {len(data)} bytes, but {digest_field} says {digest.size_bytes}")
        else:
            digest = Digest.of(data, function)
            getattr(result, digest_field).CopyFrom(digest.to_proto())
        blobs[digest] = data
        result.ClearField(raw_field)  # type: ignore[arg-type]
    return blobs


def _digest(proto: re_pb2.Digest, function: int, where: str) -> Digest:
    try:
        return Digest.from_proto(proto, function)
    except ReapiError as err:
        raise err.with_context(f"inline {where}") from None
