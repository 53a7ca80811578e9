"""VerifyingStore: content-addressed semantics in front of any store.

- Writes are checked while they stream: more bytes than the digest's size abort at
  once, and a hash mismatch aborts at the end of the stream before the inner store
  commits (the BlobStore all-or-nothing rule), so a bad upload leaves no trace.
- The empty blob always exists, whatever the inner store holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping

from cas.digest import ALGORITHMS, EMPTY_DIGESTS, Digest
from cas.errors import InvalidArgument, ReapiError
from cas.store import BlobStore, ForwardingStore, Framed, check_read_range

# Chunks at least this large are hashed in a worker thread (hashlib and blake3
# release the GIL), so hashing overlaps with the event loop's own work.
THREADED_HASH_THRESHOLD = 256 << 10


def size_mismatch(digest: Digest, received: int) -> InvalidArgument:
    return InvalidArgument(f"digest size {digest.size_bytes} does not match {received} bytes received for {digest.hash}")


def hash_mismatch(digest: Digest, actual: str) -> InvalidArgument:
    return InvalidArgument(
        f"digest hash {digest.hash} does not match the {digest.algorithm.name.upper()} "
        f"of the {digest.size_bytes} bytes received ({actual})"
    )


def verify_bytes(digest: Digest, data: bytes) -> None:
    """Raise INVALID_ARGUMENT unless ``data`` is exactly the content of ``digest``."""
    if len(data) != digest.size_bytes:
        raise size_mismatch(digest, len(data))
    hasher = ALGORITHMS[digest.function].new()  # no Digest built: this runs per blob of every batch
    hasher.update(data)
    actual = hasher.hexdigest()
    if actual != digest.hash:
        raise hash_mismatch(digest, actual)


async def verified_chunks(digest: Digest, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Pass chunks through, raising mid-stream as soon as they cannot match ``digest``."""
    hasher = digest.algorithm.new()
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > digest.size_bytes:
            raise size_mismatch(digest, received)
        if len(chunk) >= THREADED_HASH_THRESHOLD:
            await asyncio.to_thread(hasher.update, chunk)
        else:
            hasher.update(chunk)
        yield chunk
    if received != digest.size_bytes:
        raise size_mismatch(digest, received)
    actual = hasher.hexdigest()
    if actual != digest.hash:
        raise hash_mismatch(digest, actual)


class VerifyingStore(ForwardingStore):
    """Checks every write against its digest; treats empty blobs as always present.

    ``write`` checks as the chunks stream; ``put_many`` checks each whole value at
    once and passes the good ones on as one batch."""

    def __init__(self, inner: BlobStore, name: str = "verify") -> None:
        super().__init__(inner)
        self.name = name

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        # One C-level pass (hashing the tuples) when, as usual, no empty blob is asked about.
        wanted = digests if EMPTY_DIGESTS.isdisjoint(digests) else [d for d in digests if not d.is_empty]
        return await self.inner.find_missing(wanted)

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        if digest.is_empty:
            return _empty_read(digest, offset)
        return self.inner.read(digest, offset, limit)

    def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        if digest.is_empty:
            return BlobStore.read_framed(self, digest, frame, offset, limit)  # through read's empty answer
        return self.inner.read_framed(digest, frame, offset, limit)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        digests = list(digests)
        if EMPTY_DIGESTS.isdisjoint(digests):  # the usual: checked in C, not a property call per blob
            return await self.inner.get_many(digests)
        found = await self.inner.get_many([d for d in digests if not d.is_empty])
        found.update((d, b"") for d in digests if d.is_empty)
        return found

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        checked = verified_chunks(digest, chunks)
        if digest.is_empty:
            async for _ in checked:
                pass
            return
        await self.inner.write(digest, checked)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures: dict[Digest, ReapiError] = {}
        valid: dict[Digest, bytes] = {}
        for digest, data in blobs.items():
            try:
                verify_bytes(digest, data)
            except ReapiError as err:
                failures[digest] = err
                continue
            if not digest.is_empty:
                valid[digest] = data
        if valid:
            failures.update(await self.inner.put_many(valid))
        return failures


async def _empty_read(digest: Digest, offset: int) -> AsyncIterator[bytes]:
    check_read_range(digest, 0, offset, None)
    return
    yield b""  # pragma: no cover - makes this an async generator
