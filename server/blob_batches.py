"""The CAS batch calls' rules: one store call per batch, a cap on the whole, errors per blob.

BatchUpdateBlobs and BatchReadBlobs are the hot path for many small blobs, so each
batch is one store call (``put_many``, ``get_many``) and its digests are validated
in one vectorised pass (``digests_from_protos``), falling back to one by one only
to say which entry is malformed. A batch whose blobs add up to more than
``max_total_bytes`` is refused whole, naming the limit; a malformed digest, a
compressed blob or a failed store write fails only its own entry, as REv2 asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from cas.digest import Digest, algorithm_for, digests_from_protos
from cas.errors import InvalidArgument, ReapiError
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

IDENTITY = re_pb2.Compressor.IDENTITY


class BatchUpdate(NamedTuple):
    digests: list[Digest | None]  # per entry; None where the digest is malformed
    errors: dict[int, ReapiError]  # by entry position; empty when every blob is stored


class BatchRead(NamedTuple):
    digests: list[Digest | None]  # per entry; None where the digest is malformed
    refused: dict[int, ReapiError]  # by entry position: the malformed digests
    found: dict[Digest, bytes]  # the blobs there are; the others are absent


class BlobBatches:
    """Batch writes and reads against a CAS, within ``max_total_bytes`` per batch."""

    def __init__(self, max_total_bytes: int) -> None:
        self.max_total_bytes = max_total_bytes

    def check_total(self, total: int, what: str) -> None:
        if total > self.max_total_bytes:
            raise InvalidArgument(
                f"{what} asks for {total} bytes in one batch, over this server's limit of "
                f"{self.max_total_bytes} bytes (max_batch_total_size_bytes); use ByteStream for the rest"
            )

    async def update(
        self,
        cas: BlobStore,
        digests: Sequence[re_pb2.Digest],
        function: int,
        datas: Sequence[bytes],
        compressors: Sequence[int],
    ) -> BatchUpdate:
        """Store each entry's data under its digest; ``compressors`` are the entries' own."""
        self.check_total(sum(map(len, datas)), "BatchUpdateBlobs")
        parsed, refused = digests_each(digests, function)
        if set(compressors) != {IDENTITY}:
            for i, compressor in enumerate(compressors):
                if compressor != IDENTITY and i not in refused:
                    refused[i] = InvalidArgument(
                        f"compressor {compressor_name(compressor)} is not supported for {parsed[i]}: "
                        "this server takes uncompressed blobs only (Capabilities lists no batch compressors)"
                    )
        if refused:
            blobs = {d: data for i, (d, data) in enumerate(zip(parsed, datas)) if i not in refused and d is not None}
        else:
            blobs = dict(zip(parsed, datas))  # type: ignore[arg-type]
        failures = await cas.put_many(blobs) if blobs else {}
        if failures:
            for i, digest in enumerate(parsed):
                if i not in refused and digest is not None and digest in failures:
                    refused[i] = failures[digest]
        return BatchUpdate(parsed, refused)

    async def read(self, cas: BlobStore, digests: Sequence[re_pb2.Digest], function: int) -> BatchRead:
        """Each distinct well-formed digest's blob, if the CAS has it."""
        parsed, refused = digests_each(digests, function)
        wanted: set[Digest] = {d for d in parsed if d is not None}
        self.check_total(sum(d.size_bytes for d in wanted), "BatchReadBlobs")
        found = await cas.get_many(wanted) if wanted else {}
        return BatchRead(parsed, refused, found)


def digests_each(protos: Sequence[re_pb2.Digest], function: int) -> tuple[list[Digest | None], dict[int, ReapiError]]:
    """Validate batch digests; a malformed one fails only its own entry.

    An unsupported digest function fails the whole request (it applies to all).
    """
    if function:
        algorithm_for(function)
    try:
        return list(digests_from_protos(protos, function)), {}
    except InvalidArgument:
        pass
    digests: list[Digest | None] = []
    refused: dict[int, ReapiError] = {}
    for i, proto in enumerate(protos):
        try:
            digests.append(Digest.from_proto(proto, function))
        except InvalidArgument as err:
            digests.append(None)
            refused[i] = err
    return digests, refused


def compressor_name(value: int) -> str:
    return re_pb2.Compressor.Value.Name(value) if value in re_pb2.Compressor.Value.values() else str(value)
