"""MirroredStore: writes reach both sides, reads either, misses are repaired, and one
failing side (down, or breaking midway) never fails a call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cas.decorators.mirrored import MirroredStore
from cas.digest import Digest
from cas.errors import NotFound, Unavailable
from cas.memory import MemoryStore
from cas.store import ForwardingStore
from tests.cas.streams import StreamBroke, blob, chunks_of, read_all, read_chunks
from tests.cas.test_sharding import Down

CHUNK = 1000


def pair() -> tuple[MirroredStore, MemoryStore, MemoryStore]:
    a, b = MemoryStore(1 << 24, name="node-1", chunk_size=CHUNK), MemoryStore(1 << 24, name="node-2", chunk_size=CHUNK)
    return MirroredStore(a, b, name="cas-pair"), a, b


def first_side(store: MirroredStore, seed_from: int, want_a: bool, size: int = 5000) -> tuple[Digest, bytes]:
    """A blob whose reads go to ``a`` first (or to ``b``)."""
    for seed in range(seed_from, seed_from + 100):
        digest, data = blob(seed, size)
        if (store._sides(digest)[0] is store.a) == want_a:
            return digest, data
    raise AssertionError("no such blob")


async def test_writes_reach_both_sides() -> None:
    store, a, b = pair()
    streamed, data = blob(1, 5 * CHUNK + 3)
    await store.write(streamed, chunks_of(data, 700))
    values = dict(blob(seed, 300) for seed in range(2, 12))
    assert await store.put_many(values) == {}
    for side in (a, b):
        assert await side.get_bytes(streamed) == data
        assert await side.get_many(values) == values


async def test_reads_spread_over_both_sides() -> None:
    store, a, b = pair()
    values = dict(blob(seed, 300) for seed in range(40))
    await store.put_many(values)
    firsts = {store._sides(d)[0].name for d in values}
    assert firsts == {"node-1", "node-2"}


@pytest.mark.parametrize("missing_on_a", [True, False])
async def test_a_whole_read_repairs_the_side_that_missed(missing_on_a: bool) -> None:
    store, a, b = pair()
    digest, data = first_side(store, 100, want_a=missing_on_a)
    holder, lacking = (b, a) if missing_on_a else (a, b)
    await holder.put_bytes(digest, data)
    assert await read_all(store, digest) == data
    assert await lacking.get_bytes(digest) == data


async def test_a_ranged_read_is_served_but_not_repaired() -> None:
    store, a, b = pair()
    digest, data = first_side(store, 200, want_a=True)
    await b.put_bytes(digest, data)
    assert await read_all(store, digest, offset=10, limit=100) == data[10:110]
    assert not await a.has(digest)


async def test_batch_reads_repair_what_one_side_lacks() -> None:
    store, a, b = pair()
    values = dict(blob(seed, 300) for seed in range(300, 340))
    await b.put_many(values)
    absent, _ = blob(399, 10)
    assert await store.get_many([*values, absent]) == values
    asked_of_a_first = {d: v for d, v in values.items() if store._sides(d)[0] is a}
    assert asked_of_a_first and await a.get_many(values) == asked_of_a_first


async def test_find_missing_repairs_both_ways_and_reports_what_neither_holds() -> None:
    store, a, b = pair()
    only_a, data_a = blob(400, 300)
    only_b, data_b = blob(401, 3 << 20)  # large: streamed across, not held in memory whole
    neither, _ = blob(402, 10)
    await a.put_bytes(only_a, data_a)
    await b.put_bytes(only_b, data_b)
    assert await store.find_missing([only_a, only_b, neither]) == {neither}
    assert await b.get_bytes(only_a) == data_a
    assert await a.get_bytes(only_b) == data_b


async def test_one_side_down_serves_everything_from_the_other() -> None:
    live = MemoryStore(1 << 24, name="node-1", chunk_size=CHUNK)
    store = MirroredStore(live, Down("node-2"), name="cas-pair")
    values = dict(blob(seed, 300) for seed in range(500, 520))
    assert await store.put_many(values) == {}
    streamed, data = blob(530, 4 * CHUNK)
    await store.write(streamed, chunks_of(data, 900))
    assert await store.get_many(values) == values
    assert await store.find_missing([*values, streamed]) == set()
    for digest in [*values, streamed]:
        assert await store.get_bytes(digest) == (data if digest == streamed else values[digest])
    absent, _ = blob(531, 10)
    with pytest.raises(NotFound):
        await read_chunks(store, absent)
    assert await store.get_many([absent]) == {}


async def test_both_sides_down_fails_naming_both() -> None:
    store = MirroredStore(Down("node-1"), Down("node-2"), name="cas-pair")
    digest, data = blob(600, 10)
    for call in (store.find_missing([digest]), store.get_many([digest]), read_chunks(store, digest),
                 store.write(digest, chunks_of(data))):
        with pytest.raises(Unavailable) as caught:
            await call
        assert "mirror 'node-1' of 'cas-pair'" in caught.value.message
        assert "mirror 'node-2' of 'cas-pair'" in caught.value.message
    failures = await store.put_many({digest: data})
    assert isinstance(failures[digest], Unavailable) and "node-1" in failures[digest].message


class BreaksMidRead(ForwardingStore):
    """A side whose streams fail after the first chunk (its node died mid-read)."""

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        return self._broken(self.inner.read(digest, offset, limit))

    async def _broken(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        yield await anext(chunks)
        raise Unavailable("connection reset")


@pytest.mark.parametrize(("offset", "limit"), [(0, None), (1500, None), (500, 3000)])
async def test_a_stream_that_breaks_resumes_on_the_other_side(offset: int, limit: int | None) -> None:
    a, b = MemoryStore(1 << 24, name="node-1", chunk_size=CHUNK), MemoryStore(1 << 24, name="node-2", chunk_size=CHUNK)
    store = MirroredStore(BreaksMidRead(a), b, name="cas-pair")
    digest, data = first_side(store, 700, want_a=True, size=6 * CHUNK)
    await store.put_bytes(digest, data)
    end = len(data) if limit is None else offset + limit
    assert await read_all(store, digest, offset, limit) == data[offset:end]


async def test_a_broken_upload_reaches_neither_side() -> None:
    store, a, b = pair()
    digest, data = blob(800, 10 * CHUNK)
    with pytest.raises(StreamBroke):
        await store.write(digest, chunks_of(data, CHUNK, fail_after=3))
    assert not await a.has(digest) and not await b.has(digest)


async def test_a_side_that_comes_back_empty_is_refilled_by_use() -> None:
    store, a, b = pair()
    values = dict(blob(seed, 200) for seed in range(900, 930))
    await store.put_many(values)
    a._values.clear()  # node-1 lost its disk
    assert await store.find_missing(values) == set()
    assert await a.get_many(values) == values
