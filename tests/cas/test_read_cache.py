"""ReadCachingStore: what lands in the fast store, and when it must not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing

import pytest

from cas.digest import Digest
from cas.errors import NotFound, Unavailable
from cas.memory import MemoryStore
from cas.decorators.read_cache import ReadCachingStore
from cas.store import BlobStore, ForwardingStore
from tests.cas.streams import StreamBroke, blob, chunks_of, read_all, read_chunks

CHUNK = 1000


class BreaksMidRead(ForwardingStore):
    """A slow store whose streamed reads fail after the first chunk (a dropped connection)."""

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        return self._broken(self.inner.read(digest, offset, limit))

    async def _broken(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        yield await anext(chunks)
        raise Unavailable("slow store went away")


class SkipsExistingWrites(ForwardingStore):
    """A slow store that, like a disk CAS, stops reading an upload of a value it holds."""

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        if await self.inner.has(digest):
            return
        await self.inner.write(digest, chunks)


def stores(write_to_fast: bool = False, fast_bytes: int = 1 << 20) -> tuple[ReadCachingStore, MemoryStore, MemoryStore]:
    fast = MemoryStore(fast_bytes, name="fast", chunk_size=CHUNK)
    slow = MemoryStore(1 << 20, name="slow", chunk_size=CHUNK)
    return ReadCachingStore(fast, slow, write_to_fast=write_to_fast), fast, slow


async def test_a_whole_read_that_misses_fills_fast() -> None:
    cache, fast, slow = stores()
    digest, data = blob(1, 5 * CHUNK + 7)
    await slow.put_bytes(digest, data)
    assert await read_all(cache, digest) == data
    assert await fast.get_bytes(digest) == data


async def test_a_hit_is_served_by_fast() -> None:
    cache, fast, slow = stores()
    digest, data = blob(2, 3000)
    await fast.put_bytes(digest, data)
    assert await read_all(cache, digest) == data
    assert await read_all(cache, digest, offset=100, limit=50) == data[100:150]
    assert await slow.find_missing([digest]) == {digest}


async def test_a_ranged_read_that_misses_does_not_fill() -> None:
    cache, fast, slow = stores()
    digest, data = blob(3, 5000)
    await slow.put_bytes(digest, data)
    assert await read_all(cache, digest, offset=10) == data[10:]
    assert await read_all(cache, digest, limit=10) == data[:10]
    assert not await fast.has(digest)


async def test_an_abandoned_read_does_not_fill() -> None:
    cache, fast, slow = stores()
    digest, data = blob(4, 5 * CHUNK)
    await slow.put_bytes(digest, data)
    chunks = cache.read(digest)
    assert await anext(chunks) == data[:CHUNK]
    await chunks.aclose()  # type: ignore[attr-defined]
    assert not await fast.has(digest)
    assert len(fast) == 0


async def test_a_slow_read_that_breaks_does_not_fill() -> None:
    fast = MemoryStore(1 << 20, name="fast")
    slow = MemoryStore(1 << 20, name="slow", chunk_size=CHUNK)
    cache = ReadCachingStore(fast, BreaksMidRead(slow))
    digest, data = blob(5, 3 * CHUNK)
    await slow.put_bytes(digest, data)
    with pytest.raises(Unavailable, match="went away"):
        await read_chunks(cache, digest)
    assert not await fast.has(digest)


async def test_a_value_too_big_for_fast_is_still_served() -> None:
    cache, fast, slow = stores(fast_bytes=2 * CHUNK)
    digest, data = blob(6, 5 * CHUNK)
    await slow.put_bytes(digest, data)
    assert await read_all(cache, digest) == data
    assert await cache.get_bytes(digest) == data
    assert await cache.get_many([digest]) == {digest: data}
    assert not await fast.has(digest)


async def test_a_miss_in_both_is_not_found_and_fills_nothing() -> None:
    cache, fast, _ = stores()
    digest, _ = blob(7, 100)
    with pytest.raises(NotFound):
        await read_chunks(cache, digest)
    assert len(fast) == 0


async def test_existence_is_decided_by_slow() -> None:
    """A blob only in fast (slow lost it) must be reported missing so clients upload it again."""
    cache, fast, slow = stores()
    only_fast, data = blob(8, 100)
    await fast.put_bytes(only_fast, data)
    both, data2 = blob(9, 100)
    await slow.put_bytes(both, data2)
    assert await cache.find_missing([only_fast, both]) == {only_fast}
    assert not await cache.has(only_fast)
    assert await cache.has(both)


@pytest.mark.parametrize("method", ["get_bytes", "get_or_none", "get_many"])
async def test_in_memory_reads_fill_fast(method: str) -> None:
    cache, fast, slow = stores()
    digest, data = blob(10, 100)
    await slow.put_bytes(digest, data)
    match method:
        case "get_bytes":
            assert await cache.get_bytes(digest) == data
        case "get_or_none":
            assert await cache.get_or_none(digest) == data
        case "get_many":
            assert await cache.get_many([digest, blob(11, 5)[0]]) == {digest: data}
    assert await fast.get_bytes(digest) == data


async def test_the_empty_value_is_cached_too() -> None:
    cache, fast, slow = stores()
    await slow.put_bytes(Digest.empty(), b"")
    assert await read_all(cache, Digest.empty()) == b""
    assert await fast.has(Digest.empty())


# -- writes ------------------------------------------------------------------------------


@pytest.mark.parametrize("write_to_fast", [False, True])
async def test_writes_reach_slow_and_fast_only_if_asked(write_to_fast: bool) -> None:
    cache, fast, slow = stores(write_to_fast)
    streamed, data = blob(12, 4 * CHUNK)
    put, small = blob(13, 10)
    many, other = blob(14, 20)
    await cache.write(streamed, chunks_of(data, 700))
    await cache.put_bytes(put, small)
    assert await cache.put_many({many: other}) == {}
    assert await slow.get_many([streamed, put, many]) == {streamed: data, put: small, many: other}
    expected_in_fast = {streamed: data, put: small, many: other} if write_to_fast else {}
    assert await fast.get_many([streamed, put, many]) == expected_in_fast


async def test_a_broken_write_reaches_neither() -> None:
    cache, fast, slow = stores(write_to_fast=True)
    digest, data = blob(15, 4 * CHUNK)
    with pytest.raises(StreamBroke):
        await cache.write(digest, chunks_of(data, 700, fail_after=3))
    assert len(fast) == 0 and len(slow) == 0


async def test_fast_never_commits_a_prefix_when_slow_stops_reading_early() -> None:
    fast = MemoryStore(1 << 20, name="fast")
    slow = MemoryStore(1 << 20, name="slow")
    cache = ReadCachingStore(fast, SkipsExistingWrites(slow), write_to_fast=True)
    digest, data = blob(16, 4 * CHUNK)
    await slow.put_bytes(digest, data)
    await cache.write(digest, chunks_of(data, 700))
    assert len(fast) == 0
    assert await read_all(cache, digest) == data  # and the next read fills it whole
    assert await fast.get_bytes(digest) == data


async def test_fast_failures_do_not_fail_writes() -> None:
    cache, fast, slow = stores(write_to_fast=True, fast_bytes=CHUNK)
    digest, data = blob(17, 3 * CHUNK)
    await cache.write(digest, chunks_of(data, 700))
    await cache.put_bytes(blob(18, 5 * CHUNK)[0], blob(18, 5 * CHUNK)[1])
    assert await cache.put_many(dict([blob(19, 2 * CHUNK)])) == {}
    assert len(fast) == 0
    assert len(slow) == 3


def test_every_primitive_is_overridden_and_every_shortcut_is_built_on_them() -> None:
    """ReadCachingStore has two children, so any inherited default primitive would be
    wrong or slow; the shortcuts are BlobStore's own, built on the primitives."""
    for method in ("find_missing", "read", "write", "get_many", "put_many", "aclose"):
        assert getattr(ReadCachingStore, method) is not getattr(BlobStore, method), method
    for method in ("has", "get_bytes", "get_or_none", "put_bytes"):
        assert getattr(ReadCachingStore, method) is getattr(BlobStore, method), method


async def test_a_cancelled_read_does_not_fill_or_leave_tasks_behind() -> None:
    cache, fast, slow = stores()
    digest, data = blob(20, 5 * CHUNK)
    await slow.put_bytes(digest, data)
    got_first = asyncio.Event()

    async def reader() -> None:
        async with aclosing(cache.read(digest)) as chunks:  # type: ignore[type-var]
            async for _ in chunks:
                got_first.set()
                await asyncio.Event().wait()  # a client that stalls

    task = asyncio.create_task(reader())
    await got_first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fast) == 0
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("fill ")]
    assert leftovers == []
