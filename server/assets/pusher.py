"""AssetPusher: PushBlob and PushDirectory without the gRPC layer.

A push records (uri, qualifiers) -> digest for each URI, with the client's
``expire_at`` (none: no expiry of its own) and the blobs and trees the entry
references, which Fetch checks before answering. The content must already be in
the CAS (FAILED_PRECONDITION with MISSING violations otherwise, the shape REv2
clients know). Qualifiers are trusted, as the spec allows, with one exception: a
``checksum.sri`` is recorded in the checksum index only when the pushed digest
itself proves it (same algorithm, same hash), since that index answers fetches
for any URI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cas.digest import Digest
from cas.errors import InvalidArgument, MissingBlobs, PermissionDenied
from cas.store import BlobStore
from server.assets.index import BLOB, AssetEntry, AssetIndex, AssetKey, Clock
from server.assets.qualifiers import Qualifiers
from server.assets.uris import redact_uri

log = logging.getLogger("reapi.assets")


class AssetPusher:
    def __init__(self, index: AssetIndex, clock: Clock, enabled: bool = True) -> None:
        self.index = index
        self.clock = clock
        self.enabled = enabled

    async def push(
        self,
        cas: BlobStore,
        instance: str,
        kind: str,
        uris: Sequence[str],
        qualifiers: Qualifiers,
        digest: Digest,
        expire_at: float | None,
        referenced_blobs: Sequence[Digest] = (),
        referenced_directories: Sequence[Digest] = (),
    ) -> None:
        if not self.enabled:
            raise PermissionDenied("pushing assets is disabled on this server ([assets] allow_push = false)")
        if not uris:
            raise InvalidArgument("uris: at least one URI is required")
        for i, uri in enumerate(uris):
            if not uri.strip():
                raise InvalidArgument(f"uris[{i}] is empty")
        mixed = [d for d in (*referenced_blobs, *referenced_directories) if d.function != digest.function]
        if mixed:
            raise InvalidArgument(f"referenced digest {mixed[0]} uses another digest function than {digest}")
        needed = {digest, *referenced_blobs, *referenced_directories}
        missing = await cas.find_missing(needed)
        if missing:
            raise MissingBlobs(missing, what="content to push")
        entry = AssetEntry(
            kind,
            digest,
            fetched_at=self.clock(),
            expires_at=expire_at,
            pushed=True,
            referenced_blobs=tuple(referenced_blobs),
            referenced_directories=tuple(referenced_directories),
        )
        await self.index.put([AssetKey(instance, kind, uri, qualifiers.pairs, digest.function) for uri in uris], entry)
        if kind == BLOB:
            proven = [c for c in qualifiers.checksums if c.algorithm == digest.algorithm.name and c.hex == digest.hash]
            await self.index.put_checksums(instance, proven, digest)
        log.info("asset push: %s -> %s %s", ", ".join(redact_uri(u) for u in uris), kind, digest)
