"""MemoryStore: values in a dict, evicted least-recently-used by total bytes.

A value streamed in large chunks is kept as those chunks (``Pieces``), not joined:
a ByteStream upload's chunks are views of the messages gRPC received
(server/write_requests.py), immutable bytes already in memory, and joining 64 MiB
of them into one new buffer cost a quarter of the upload's server CPU (the copy,
and the page faults of fresh memory). Only read-only views of ``bytes`` are kept so;
anything else (small chunks, writable buffers) is joined as before.

Reads hand out views of the held values, not copies: a value is immutable, and a
reader's view keeps it alive even if it is evicted meanwhile. (A ByteStream read
copies each chunk once, into its response; a copy here first was a third of the
copying a 64 MiB read did.)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from typing import cast

from cas.digest import Digest
from cas.errors import NotFound, ReapiError, ResourceExhausted
from cas.lru import Lru
from cas.store import READ_CHUNK_SIZE, BlobStore, Framed, check_read_range

# Chunks of a streamed value at least this large (all but the last) are kept as they are.
KEEP_PIECES_FROM = 256 << 10


def _immutable(chunk: bytes | memoryview) -> bool:
    return type(chunk) is bytes or (isinstance(chunk, memoryview) and chunk.readonly and type(chunk.obj) is bytes)


class Pieces:
    """A value held as the chunks it arrived in; ``len`` is its size in bytes."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = tuple(parts)
        self.size = sum(map(len, parts))

    def __len__(self) -> int:
        return self.size

    def joined(self) -> bytes:
        return b"".join(self.parts)

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[memoryview]:
        """Views of bytes ``start`` to ``end``, in chunks of at most ``chunk_size`` (each within one piece)."""
        base = 0
        for part in self.parts:
            stop = base + len(part)
            if stop > start and base < end:
                view = memoryview(part)[max(start, base) - base : min(end, stop) - base]
                for at in range(0, len(view), chunk_size):
                    yield view[at : at + chunk_size]
            base = stop
            if base >= end:
                return


def _kept(parts: list[bytes | memoryview]) -> bytes | Pieces:
    if len(parts) > 1 and min(map(len, parts[:-1])) >= KEEP_PIECES_FROM and all(map(_immutable, parts)):
        return Pieces(parts)
    return b"".join(parts)


class MemoryStore(BlobStore):
    """A byte-capped LRU. Every method is synchronous inside, so no locks are needed."""

    def __init__(self, max_bytes: int, name: str = "memory", chunk_size: int = READ_CHUNK_SIZE) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self._values: Lru[Digest, bytes | Pieces] = Lru(len)
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
        for view in self._views(digest, offset, limit):
            yield cast(bytes, view)  # a view: see the module doc (bytes-like, as cas/store.py's read allows)

    async def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        """``read``'s views, each joined behind its frame (the one copy a ByteStream read
        makes of a held value), in one generator rather than one around ``read``."""
        join = b"".join
        for view in self._views(digest, offset, limit):
            size = len(view)
            yield join((frame(size), view)), size

    def _views(self, digest: Digest, offset: int, limit: int | None) -> Iterator[memoryview]:
        value = self._values.get(digest)
        if value is None:
            raise NotFound(f"{digest} not found in {self.name}")
        end = check_read_range(digest, len(value), offset, limit)
        if isinstance(value, Pieces):
            return value.chunks(offset, end, self.chunk_size)
        view = memoryview(value)
        return (view[start : min(end, start + self.chunk_size)] for start in range(offset, end, self.chunk_size))

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        parts: list[bytes | memoryview] = [chunk async for chunk in chunks]
        self._put(digest, _kept(parts))

    def _put(self, digest: Digest, value: bytes | Pieces) -> None:
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
                out[digest] = value.joined() if isinstance(value, Pieces) else value
        return out

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures: dict[Digest, ReapiError] = {}
        for digest, data in blobs.items():
            try:
                self._put(digest, bytes(data))
            except ReapiError as err:
                failures[digest] = err
        return failures
