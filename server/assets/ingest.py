"""Put a stream of unknown content into the CAS: hash it, check its checksums, store it.

Two paths:

- **direct**: when the request's checksum is in the digest function's own algorithm
  and the origin announced the size, the digest is known up front, so the stream
  goes straight into ``cas.write``. A checksum mismatch raises before the stream
  ends, and by the BlobStore rule the store then keeps nothing. (A VerifyingStore
  does that check itself, so the stream is not hashed twice.)
- **spooled**: otherwise the content is hashed into a SpoolFile, checked, and then
  written under the digest just computed (skipped if the CAS already holds it).

Hashing runs in a worker thread one chunk behind the network, so receiving the
next chunk overlaps with hashing the last (hashlib and blake3 release the GIL).
Every algorithm is hashed once, even when the digest function and a checksum
share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from cas.digest import ALGORITHMS, Digest, DigestFunctionValue, Hasher
from cas.errors import Aborted, InvalidArgument
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from server.assets.spool import Spool, SpoolFile
from server.assets.sri import Checksum, describe_mismatch, matching

# Chunks smaller than this are hashed inline: a thread hop would cost more.
THREAD_THRESHOLD = 64 << 10


class ContentHasher:
    """One hasher per algorithm needed: the digest function's and each checksum's."""

    def __init__(self, function: DigestFunctionValue, checksum_algorithms: Iterable[str] = ()) -> None:
        self.function = function
        self.function_name = ALGORITHMS[function].name
        factories: dict[str, Callable[[], Hasher]] = {self.function_name: ALGORITHMS[function].new}
        by_name = {a.name: a for a in ALGORITHMS.values()}
        for name in checksum_algorithms:
            factories.setdefault(name, by_name[name].new)
        self._hashers = {name: factory() for name, factory in factories.items()}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(chunk)
        self.size += len(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def digest(self) -> Digest:
        return Digest(self._hashers[self.function_name].hexdigest(), self.size, self.function)


@dataclass(frozen=True)
class Ingested:
    """What was stored, and every hash computed on the way (for the checksum index)."""

    digest: Digest
    hashes: dict[str, str]


def check_checksums(checksums: tuple[Checksum, ...], hashes: dict[str, str], source: str) -> None:
    """ABORTED unless the content matches at least one expected checksum."""
    if checksums and matching(checksums, hashes) is None:
        raise Aborted(f"{source}: checksum mismatch: {describe_mismatch(checksums, hashes)}")


async def _hashed(chunks: AsyncIterable[bytes], hasher: ContentHasher, sink: SpoolFile | None) -> AsyncIterator[bytes]:
    """Yield chunks unchanged while hashing (and spooling) them one chunk behind, in a thread."""

    def absorb(chunk: bytes) -> None:
        hasher.update(chunk)
        if sink is not None:
            sink.write(chunk)

    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            if pending is not None:
                await pending
                pending = None
            if len(chunk) >= THREAD_THRESHOLD:
                pending = loop.run_in_executor(None, absorb, chunk)
            else:
                absorb(chunk)
            yield chunk
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:
            # Never leave a thread writing into a hasher or file that is being dropped;
            # wait() does not raise, so the error that brought us here is the one reported.
            await asyncio.wait([pending])


async def ingest(
    chunks: AsyncIterable[bytes],
    cas: BlobStore,
    spool: Spool,
    function: DigestFunctionValue,
    checksums: tuple[Checksum, ...] = (),
    expected_size: int | None = None,
    source: str = "content",
) -> Ingested:
    """Store ``chunks`` in ``cas`` under their ``function`` digest; ABORTED on a checksum mismatch."""
    hasher = ContentHasher(function, {c.algorithm for c in checksums})
    if expected_size is not None and len(checksums) == 1 and checksums[0].algorithm == hasher.function_name:
        expected = Digest(checksums[0].hex, expected_size, function)
        if await cas.has(expected):
            # The checksum names content we already hold: the body need not be read.
            return Ingested(expected, {hasher.function_name: expected.hash})

        if isinstance(cas, VerifyingStore):
            # The store checks size and hash while it writes and keeps nothing on a
            # mismatch; hashing here as well would double the CPU cost of a download.
            try:
                await cas.write(expected, chunks)
            except InvalidArgument as err:
                raise Aborted(f"{source}: checksum mismatch: expected {checksums[0].to_sri()}; {err.message}") from None
            return Ingested(expected, {hasher.function_name: expected.hash})

        async def checked() -> AsyncIterator[bytes]:
            async for chunk in _hashed(chunks, hasher, None):
                yield chunk
            check_checksums(checksums, hasher.hexdigests(), source)  # raises before the store commits

        await cas.write(expected, checked())
        return Ingested(expected, hasher.hexdigests())

    with spool.new() as spooled:
        async for _ in _hashed(chunks, hasher, spooled):
            pass
        hashes = hasher.hexdigests()
        check_checksums(checksums, hashes, source)
        digest = hasher.digest()
        if not await cas.has(digest):
            await cas.write(digest, spooled.chunks())
        return Ingested(digest, hashes)
