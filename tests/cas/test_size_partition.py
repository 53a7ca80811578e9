"""SizePartitioningStore: every call for a digest reaches the child its size picks."""

from __future__ import annotations

import pytest

from cas.memory import MemoryStore
from cas.decorators.size_partition import SizePartitioningStore
from cas.store import BlobStore
from tests.cas.streams import blob, chunks_of, read_all

THRESHOLD = 1000


@pytest.fixture
def children() -> tuple[MemoryStore, MemoryStore]:
    return MemoryStore(1 << 20, name="small"), MemoryStore(1 << 20, name="large")


@pytest.fixture
def store(children: tuple[MemoryStore, MemoryStore]) -> SizePartitioningStore:
    small, large = children
    return SizePartitioningStore(small, large, threshold=THRESHOLD)


async def test_the_threshold_belongs_to_the_small_store(store: SizePartitioningStore, children: tuple[MemoryStore, MemoryStore]) -> None:
    small, large = children
    at, at_data = blob(1, THRESHOLD)
    over, over_data = blob(2, THRESHOLD + 1)
    await store.put_bytes(at, at_data)
    await store.write(over, chunks_of(over_data, 300))
    assert await small.get_many([at, over]) == {at: at_data}
    assert await large.get_many([at, over]) == {over: over_data}


async def test_bulk_calls_split_and_merge(store: SizePartitioningStore, children: tuple[MemoryStore, MemoryStore]) -> None:
    small, large = children
    values = dict(blob(seed, size) for seed, size in [(3, 10), (4, 999), (5, 1001), (6, 50_000)])
    assert await store.put_many(values) == {}
    assert len(small) == 2 and len(large) == 2
    absent = [blob(7, 5)[0], blob(8, 5000)[0]]
    assert await store.get_many([*values, *absent]) == values
    assert await store.find_missing([*values, *absent]) == set(absent)


async def test_reads_go_to_the_store_the_size_picks(store: SizePartitioningStore, children: tuple[MemoryStore, MemoryStore]) -> None:
    """A value planted in the wrong child stays invisible: routing never asks both."""
    small, large = children
    misplaced, data = blob(9, 5000)
    await small.put_bytes(misplaced, data)
    assert await store.find_missing([misplaced]) == {misplaced}
    assert await store.get_or_none(misplaced) is None
    placed, data2 = blob(10, 5000)
    await large.put_bytes(placed, data2)
    assert await read_all(store, placed, offset=10) == data2[10:]
    assert await store.get_bytes(placed) == data2
    assert await store.has(placed)


async def test_failures_from_either_side_are_reported(children: tuple[MemoryStore, MemoryStore]) -> None:
    tiny_large = MemoryStore(2000, name="large")
    store = SizePartitioningStore(children[0], tiny_large, threshold=THRESHOLD)
    fits, fits_data = blob(11, 10)
    too_big, too_big_data = blob(12, 3000)
    failures = await store.put_many({fits: fits_data, too_big: too_big_data})
    assert set(failures) == {too_big}
    assert "large" in failures[too_big].message
    assert await store.find_missing([fits, too_big]) == {too_big}


def test_every_primitive_routes_and_every_shortcut_is_built_on_them() -> None:
    """Each primitive is routed by size (an inherited default would split a batch into
    single values); the shortcuts are BlobStore's own, built on the primitives."""
    for method in ("find_missing", "read", "write", "get_many", "put_many"):
        assert getattr(SizePartitioningStore, method) is not getattr(BlobStore, method), method
    for method in ("has", "get_bytes", "get_or_none", "put_bytes"):
        assert getattr(SizePartitioningStore, method) is getattr(BlobStore, method), method
