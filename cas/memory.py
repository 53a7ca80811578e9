"""MemoryStore: values in a dict, evicted least-recently-used by total bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping

from cas.digest import Digest
from cas.errors import NotFound, ReapiError, ResourceExhausted
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range


class MemoryStore(BlobStore):
    """A byte-capped LRU. Every method is synchronous inside, so no locks are needed."""

    def __init__(self, max_bytes: int, name: str = "memory", chunk_size: int = READ_CHUNK_SIZE) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self._values: OrderedDict[Digest, bytes] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        values = self._values
        missing = set()
        for digest in digests:
            if digest in values:
                values.move_to_end(digest)
            else:
                missing.add(digest)
        return missing

    async def has(self, digest: Digest) -> bool:
        return digest in self._values

    def _get(self, digest: Digest) -> bytes:
        try:
            value = self._values[digest]
        except KeyError:
            raise NotFound(f"{digest} not found in {self.name}") from None
        self._values.move_to_end(digest)
        return value

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        value = self._get(digest)
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
        old = self._values.pop(digest, None)
        if old is not None:
            self.total_bytes -= len(old)
        self._values[digest] = value
        self.total_bytes += len(value)
        while self.total_bytes > self.max_bytes:
            _, evicted = self._values.popitem(last=False)
            self.total_bytes -= len(evicted)

    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        value = self._get(digest)
        if max_size is not None and len(value) > max_size:
            raise ResourceExhausted(f"value of {digest} is {len(value)} bytes, over the {max_size}-byte limit")
        return value

    async def get_or_none(self, digest: Digest) -> bytes | None:
        value = self._values.get(digest)
        if value is not None:
            self._values.move_to_end(digest)
        return value

    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        self._put(digest, bytes(data))

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        values = self._values
        out = {}
        for digest in digests:
            value = values.get(digest)
            if value is not None:
                values.move_to_end(digest)
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
