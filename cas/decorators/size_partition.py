"""SizePartitioningStore: small blobs to one store, large ones to another.

The route is chosen by ``digest.size_bytes`` alone, so every call for a digest
reaches the same child without asking either. That makes it a CAS-only
composition: in the CAS the digest size is the blob's size, but in the action
cache the key is an action digest whose size says nothing about the stored
ActionResult, so routing there would be arbitrary (though still consistent).

Typical use: Redis for the many small blobs (fast existence checks, shared by
replicas), disk for the few large ones that would crowd Redis's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping
from operator import attrgetter

from cas.digest import Digest
from cas.errors import ReapiError
from cas.store import BlobStore, Framed


_SIZE_OF = attrgetter("size_bytes")


class SizePartitioningStore(BlobStore):
    """Blobs of at most ``threshold`` bytes live in ``small``, larger ones in ``large``.

    Each primitive routes by digest; a batch is split in two (run concurrently only
    when both sides have work), so each child still sees one batch."""

    def __init__(self, small: BlobStore, large: BlobStore, threshold: int, name: str = "size_partition") -> None:
        self.small = small
        self.large = large
        self.threshold = threshold
        self.name = name

    def store_for(self, digest: Digest) -> BlobStore:
        return self.small if digest.size_bytes <= self.threshold else self.large

    def _split(self, digests: Iterable[Digest]) -> tuple[list[Digest], list[Digest]]:
        digests = list(digests)
        # Usually every digest falls on one side: found by two C-level passes over the sizes.
        if max(map(_SIZE_OF, digests), default=0) <= self.threshold:
            return digests, []
        if min(map(_SIZE_OF, digests)) > self.threshold:
            return [], digests
        small: list[Digest] = []
        large: list[Digest] = []
        for digest in digests:
            (small if digest.size_bytes <= self.threshold else large).append(digest)
        return small, large

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        small, large = self._split(digests)
        if not large:  # one side only (the usual case for small requests): no tasks to make
            return await self.small.find_missing(small) if small else set()
        if not small:
            return await self.large.find_missing(large)
        missing_small, missing_large = await asyncio.gather(self.small.find_missing(small), self.large.find_missing(large))
        return missing_small | missing_large

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        return self.store_for(digest).read(digest, offset, limit)

    def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        return self.store_for(digest).read_framed(digest, frame, offset, limit)

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        await self.store_for(digest).write(digest, chunks)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        small, large = self._split(digests)
        if not large:
            return await self.small.get_many(small) if small else {}
        if not small:
            return await self.large.get_many(large)
        found_small, found_large = await asyncio.gather(self.small.get_many(small), self.large.get_many(large))
        return found_small | found_large

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        if max(map(_SIZE_OF, blobs), default=0) <= self.threshold:  # all small, found in C
            return await self.small.put_many(blobs) if blobs else {}
        small = {d: v for d, v in blobs.items() if d.size_bytes <= self.threshold}
        large = {d: v for d, v in blobs.items() if d.size_bytes > self.threshold}
        if not small:
            return await self.large.put_many(large)
        failed_small, failed_large = await asyncio.gather(self.small.put_many(small), self.large.put_many(large))
        return failed_small | failed_large

    async def aclose(self) -> None:
        """Children may be shared; whoever built them closes them (cas.config.close_stores)."""
