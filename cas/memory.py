"""MemoryStore: values in a dict, evicted least-recently-used by total bytes."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping

from cas.digest import Digest
from cas.errors import NotFound, ReapiError, ResourceExhausted
from cas.lru import Lru
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range


class MemoryStore(BlobStore):
    """A byte-capped LRU. Every method is synchronous inside, so no locks are needed."""

    def __init__(self, max_bytes: int, name: str = "memory", chunk_size: int = READ_CHUNK_SIZE) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self._values: Lru[Digest, bytes] = Lru(len)
        self.evicted = 0  # values evicted since the store was made

    def __len__(self) -> int:
        return len(self._values)

    @property
    def total_bytes(self) -> int:
        return self._values.total

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        peek, refresh = self._values.accessors()
        missing = set()
        for digest in digests:
            if peek(digest) is None:
                missing.add(digest)
            else:
                refresh(digest)
        return missing

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        value = self._values.get(digest)
        if value is None:
            raise NotFound(f"{digest} not found in {self.name}")
        end = check_read_range(digest, len(value), offset, limit)
        view = memoryview(value)
        for start in range(offset, end, self.chunk_size):
            yield bytes(view[start : min(end, start + self.chunk_size)])

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        parts = [chunk async for chunk in chunks]
        self._put(digest, b"".join(parts))

    def _put(self, digest: Digest, value: bytes) -> None:
        if len(value) > self.max_bytes:
            raise ResourceExhausted(f"{digest} ({len(value)} bytes) is larger than {self.name}'s {self.max_bytes}-byte capacity")
        self._values.put(digest, value)
        self.evicted += len(self._values.evict(self.max_bytes))

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        peek, refresh = self._values.accessors()
        out = {}
        for digest in digests:
            value = peek(digest)
            if value is not None:
                refresh(digest)
                out[digest] = value
        return out

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures: dict[Digest, ReapiError] = {}
        for digest, data in blobs.items():
            try:
                self._put(digest, bytes(data))
            except ReapiError as err:
                failures[digest] = err
        return failures
