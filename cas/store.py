"""The BlobStore seam: three abstract methods, everything else built on them.

Stores hold values by ``Digest``. For the CAS the value is the blob the digest names;
for the action cache the key is an action digest and the value a serialized
ActionResult, so a store never assumes ``len(value) == digest.size_bytes``. Checking
content against its digest is the job of ``VerifyingStore`` (cas/decorators/verify.py).

The one rule that makes decorators simple: ``write`` commits only if the chunk
stream ends without an error; otherwise it leaves no trace. A decorator can abort
an upload by raising mid-stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping

from cas.digest import Digest
from cas.errors import NotFound, OutOfRange, ReapiError, ResourceExhausted

# Chunk size for streamed reads: large enough to amortise per-message costs in
# gRPC, well under the 4 MiB default message limit of clients.
READ_CHUNK_SIZE = 1 << 20


async def single_chunk(data: bytes) -> AsyncIterator[bytes]:
    """An async stream of one chunk, for writes of in-memory values."""
    if data:
        yield data


def check_read_range(digest: Digest, size: int, offset: int, limit: int | None) -> int:
    """Validate a read range against a value of ``size`` bytes; return its end."""
    if offset < 0:
        raise OutOfRange(f"read offset {offset} is negative")
    if offset > size:
        raise OutOfRange(f"read offset {offset} is past the end of {digest} ({size} bytes)")
    if limit is not None and limit < 0:
        raise OutOfRange(f"read limit {limit} is negative")
    return size if not limit else min(size, offset + limit)


class BlobStore(ABC):
    """Content by digest. Subclasses implement find_missing, read and write."""

    name: str = ""

    @abstractmethod
    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        """The subset of ``digests`` not held. Refreshes the lifetime of held ones."""

    @abstractmethod
    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        """Stream a value in bounded chunks (an async generator).

        Raises NotFound if absent and OutOfRange if ``offset`` is past the end, on
        the first ``__anext__``. ``limit`` None or 0 means to the end.
        """

    @abstractmethod
    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        """Store the concatenated chunks under ``digest``; all or nothing."""

    # -- defaults built on the three above; stores override for speed ------------

    async def has(self, digest: Digest) -> bool:
        return not await self.find_missing([digest])

    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        """The whole value in memory; ResourceExhausted if larger than ``max_size``."""
        parts = []
        total = 0
        async for chunk in self.read(digest):
            total += len(chunk)
            if max_size is not None and total > max_size:
                raise ResourceExhausted(f"value of {digest} is over the {max_size}-byte limit")
            parts.append(chunk)
        return b"".join(parts)

    async def get_or_none(self, digest: Digest) -> bytes | None:
        try:
            return await self.get_bytes(digest)
        except NotFound:
            return None

    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        await self.write(digest, single_chunk(data))

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """Values of the held digests; absent ones are left out."""
        out: dict[Digest, bytes] = {}
        for digest in digests:
            value = await self.get_or_none(digest)
            if value is not None:
                out[digest] = value
        return out

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        """Store several values; return the failures by digest (empty when all stored)."""
        failures: dict[Digest, ReapiError] = {}
        for digest, data in blobs.items():
            try:
                await self.put_bytes(digest, data)
            except ReapiError as err:
                failures[digest] = err
        return failures

    async def aclose(self) -> None:
        """Release connections, files and background tasks."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ForwardingStore(BlobStore):
    """Forwards every call to ``inner``; decorators override only what they change.

    The in-memory shortcuts (put_bytes, put_many, get_bytes, get_many) forward
    directly to ``inner`` for speed, so a decorator that changes ``write`` or
    ``read`` must override the matching shortcuts too.
    """

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return await self.inner.find_missing(digests)

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        return self.inner.read(digest, offset, limit)

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        await self.inner.write(digest, chunks)

    async def has(self, digest: Digest) -> bool:
        return await self.inner.has(digest)

    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        return await self.inner.get_bytes(digest, max_size)

    async def get_or_none(self, digest: Digest) -> bytes | None:
        return await self.inner.get_or_none(digest)

    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        await self.inner.put_bytes(digest, data)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        return await self.inner.get_many(digests)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        return await self.inner.put_many(blobs)

    async def aclose(self) -> None:
        """Nothing of its own to release. Children may be shared by several parents,
        so whoever built the stores closes each one (see cas.config.close_stores)."""
