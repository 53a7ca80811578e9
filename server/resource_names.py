"""ByteStream resource names for CAS blobs: parsing (formatting is cas/resource_names.py,
re-exported here).

REv2 names blobs inside ByteStream like this::

    download  {instance}/blobs/{fn/}{hash}/{size}
              {instance}/compressed-blobs/{compressor}/{fn/}{hash}/{size}
    upload    {instance}/uploads/{uuid}/blobs/{fn/}{hash}/{size}{/metadata...}
              {instance}/uploads/{uuid}/compressed-blobs/{compressor}/{fn/}{hash}/{size}{/metadata...}

The instance name may contain slashes (or be empty, with no leading slash); REv2
forbids the reserved words below as instance name segments, so the first reserved
segment ends the instance name. ``{fn/}`` is the lowercase digest function name,
omitted for the functions that can be inferred from the hash length and required for
BLAKE3. Any compressor REv2 names parses (``identity`` included, as a plain blob);
whether this server serves it is the ByteStream service's question (cas/compression).
"""

from __future__ import annotations

from dataclasses import dataclass

from cas.digest import ALGORITHMS, Digest, algorithm_named
from cas.errors import InvalidArgument
from cas.resource_names import BLOBS, COMPRESSED_BLOBS, UPLOADS, download_name, upload_name
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

# Segments REv2 reserves; none of them may appear inside an instance name.
RESERVED_SEGMENTS = frozenset({BLOBS, COMPRESSED_BLOBS, UPLOADS, "actions", "actionResults", "operations", "capabilities"})

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_DOWNLOAD_FORM = "{instance}/blobs/{hash}/{size}"
_UPLOAD_FORM = "{instance}/uploads/{uuid}/blobs/{hash}/{size}"
__all__ = ["download_name", "upload_name", "parse_download", "parse_upload"]

_COMPRESSOR_NAMES = {name.lower(): value for name, value in re_pb2.Compressor.Value.items()}
_FUNCTION_NAMES = {name.lower() for name in re_pb2.DigestFunction.Value.keys()} - {"unknown"}


@dataclass(frozen=True)
class BlobResource:
    """A parsed download name: which instance, which blob, in which compressor's form."""

    instance_name: str
    digest: Digest
    compressor: int = re_pb2.Compressor.IDENTITY


@dataclass(frozen=True, kw_only=True)
class UploadResource(BlobResource):
    """A parsed upload name; ``upload_id`` is the client's uuid segment."""

    upload_id: str
    metadata: str = ""  # trailing implementation-specific segments, unused by us


def _malformed(name: str, problem: str, form: str) -> InvalidArgument:
    return InvalidArgument(f"resource name {name!r} is malformed: {problem} (expected {form!r})")


def _split_instance(name: str, wanted: frozenset[str], form: str) -> tuple[str, list[str]]:
    """Split at the first reserved segment: (instance name, segments from there on)."""
    segments = name.split("/")
    for i, segment in enumerate(segments):
        if segment in RESERVED_SEGMENTS:
            if segment not in wanted:
                raise _malformed(name, f"unexpected {segment!r} segment", form)
            return "/".join(segments[:i]), segments[i:]
    raise _malformed(name, f"no {' or '.join(sorted(repr(w) for w in wanted))} segment", form)


def _looks_like_function(rest: list[str]) -> bool:
    """Whether the segment after 'blobs' names a digest function rather than a hash.

    Function names contain letters outside a-f ("sha256", "blake3"); a hash, even a
    malformed one, is hex, so it falls through to Digest.parse's precise message.
    """
    first = rest[0]
    if first in _FUNCTION_NAMES:
        return True
    return len(rest) >= 3 and bool(first) and not _HEXDIGITS.issuperset(first) and rest[1] != ""


def _parse_blob_part(name: str, parts: list[str], form: str, allow_metadata: bool) -> tuple[Digest, int, str]:
    """Parse ``blobs/{fn/}{hash}/{size}...`` or ``compressed-blobs/{c}/{fn/}{hash}/{size}...``."""
    kind, rest = parts[0], parts[1:]
    compressor: int = re_pb2.Compressor.IDENTITY
    if kind == COMPRESSED_BLOBS:
        if not rest:
            raise _malformed(name, "no compressor after 'compressed-blobs'", form)
        if rest[0] not in _COMPRESSOR_NAMES:
            known = ", ".join(sorted(_COMPRESSOR_NAMES))
            raise InvalidArgument(f"resource name {name!r}: {rest[0]!r} is not a compressor (REv2 knows: {known})")
        compressor, rest = _COMPRESSOR_NAMES[rest[0]], rest[1:]
    function = 0
    if rest and _looks_like_function(rest):
        algorithm = algorithm_named(rest[0])
        if algorithm is None:
            supported = ", ".join(a.name for a in ALGORITHMS.values())
            what = "is not supported" if rest[0] in _FUNCTION_NAMES else "is not a digest function"
            raise InvalidArgument(f"resource name {name!r}: digest function {rest[0]!r} {what} (supported: {supported})")
        function, rest = algorithm.function, rest[1:]
    if len(rest) < 2:
        raise _malformed(name, "the digest needs a hash and a size", form)
    hash_hex, size_text, metadata = rest[0], rest[1], rest[2:]
    if not (size_text.isascii() and size_text.isdigit()):
        raise _malformed(name, f"size {size_text!r} is not a non-negative decimal number", form)
    if metadata and not allow_metadata:
        raise _malformed(name, f"unexpected segments after the size: {'/'.join(metadata)!r}", form)
    try:
        digest = Digest.parse(hash_hex, int(size_text), function)
    except InvalidArgument as err:
        raise err.with_context(f"resource name {name!r}") from None
    return digest, compressor, "/".join(metadata)


def parse_download(name: str) -> BlobResource:
    """Parse a ByteStream.Read resource name; INVALID_ARGUMENT naming the fault."""
    instance, parts = _split_instance(name, frozenset({BLOBS, COMPRESSED_BLOBS}), _DOWNLOAD_FORM)
    digest, compressor, _ = _parse_blob_part(name, parts, _DOWNLOAD_FORM, allow_metadata=False)
    return BlobResource(instance, digest, compressor)


def parse_upload(name: str) -> UploadResource:
    """Parse a ByteStream.Write / QueryWriteStatus resource name."""
    instance, parts = _split_instance(name, frozenset({UPLOADS}), _UPLOAD_FORM)
    if len(parts) < 3 or not parts[1]:
        raise _malformed(name, "no upload id after 'uploads'", _UPLOAD_FORM)
    if parts[2] not in (BLOBS, COMPRESSED_BLOBS):
        raise _malformed(name, f"expected 'blobs' after the upload id, found {parts[2]!r}", _UPLOAD_FORM)
    digest, compressor, metadata = _parse_blob_part(name, parts[2:], _UPLOAD_FORM, allow_metadata=True)
    return UploadResource(instance, digest, compressor, upload_id=parts[1], metadata=metadata)
