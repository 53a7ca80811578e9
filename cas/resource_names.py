"""Formatting ByteStream resource names for blobs; the server parses them
(server/resource_names.py), the worker's CAS client (cas/remote/store.py) writes them,
so the one spelling lives here, below both.

    download: {instance}/blobs/{fn/}{hash}/{size}
              {instance}/compressed-blobs/{compressor}/{fn/}{hash}/{size}
    upload:   {instance}/uploads/{uuid}/blobs/{fn/}{hash}/{size}{/metadata}
              {instance}/uploads/{uuid}/compressed-blobs/{compressor}/{fn/}{hash}/{size}{/metadata}

``{fn/}`` (the lowercase digest function) is written only where the hash length
cannot tell it (BLAKE3); an empty instance name has no leading slash.
"""

from __future__ import annotations

from cas.digest import Digest

BLOBS = "blobs"
COMPRESSED_BLOBS = "compressed-blobs"
UPLOADS = "uploads"


def blob_path(digest: Digest, compressor: str = "") -> str:
    """``blobs/{fn/}{hash}/{size}``, or ``compressed-blobs/{compressor}/...`` when one is named
    (its lowercase name, e.g. "zstd"; the digest is the uncompressed blob's)."""
    algorithm = digest.algorithm
    prefix = "" if algorithm.inferable else f"{algorithm.name}/"
    kind = f"{COMPRESSED_BLOBS}/{compressor}" if compressor else BLOBS
    return f"{kind}/{prefix}{digest.hash}/{digest.size_bytes}"


def with_instance(instance_name: str, path: str) -> str:
    return f"{instance_name}/{path}" if instance_name else path


def download_name(instance_name: str, digest: Digest, compressor: str = "") -> str:
    """The ByteStream Read resource name for ``digest`` (compressed if ``compressor`` is named)."""
    return with_instance(instance_name, blob_path(digest, compressor))


def upload_name(instance_name: str, upload_id: str, digest: Digest, metadata: str = "", compressor: str = "") -> str:
    """The ByteStream Write resource name for ``digest`` under upload ``upload_id``."""
    suffix = f"/{metadata}" if metadata else ""
    return with_instance(instance_name, f"{UPLOADS}/{upload_id}/{blob_path(digest, compressor)}{suffix}")
