"""Reads ahead (worker/read_ahead.py): a cold action's blobs asked for before its fetch,
taken by the fetch, verified as any fetch, dropped when no one took them; and files
written in place adopted by the cache only once the action's inputs are placed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import Internal, MissingBlobs
from cas.memory import MemoryStore
from tests.worker.test_file_cache import CountingStore, cached, put
from tests.worker.trees import put_tree
from worker.directories import DirectoryCache
from worker.file_cache import BATCH_BLOBS, FileCache
from worker.input_root import LINKS, READ_AHEAD_SCAN, InputRootBuilder
from worker.read_ahead import ReadAhead


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(MemoryStore(max_bytes=1 << 30))


async def test_the_fetch_takes_the_read_ahead_instead_of_asking_again(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, *(f"input {i}".encode() for i in range(50)))
    cache = await FileCache.open(tmp_path, 1 << 30)
    keys = [(d, False) for d in digests]
    store.gate = asyncio.Event()
    handle = cache.read_ahead_for(keys, store)
    again = cache.read_ahead_for(keys, store)  # another action with the same inputs: no second read
    await asyncio.sleep(0.01)
    assert len(store.get_many_calls) == 1
    store.gate.set()
    await cache.ensure(set(keys), store)
    handle.close()
    again.close()
    assert len(store.get_many_calls) == 1 and cache.read_ahead.started == 1
    for i, digest in enumerate(digests):
        assert cached(cache, digest, False).read_bytes() == f"input {i}".encode()
    # Cached now: nothing is read ahead for them any more.
    cache.read_ahead_for(keys, store).close()
    assert len(store.get_many_calls) == 1


async def test_a_read_ahead_no_fetch_took_is_dropped(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, b"one", b"two")
    cache = await FileCache.open(tmp_path, 1 << 30)
    cache.read_ahead_for([(d, False) for d in digests], store).close()
    assert cache.read_ahead.take(digests) == (digests, set())
    await cache.ensure({(d, True) for d in digests}, store)
    assert len(store.get_many_calls) == 2  # the fetch read them itself
    assert cached(cache, digests[0], True).read_bytes() == b"one"


async def test_blobs_read_ahead_are_verified_and_missing_ones_reported(store: CountingStore, tmp_path: Path) -> None:
    [digest] = await put(store, b"the real content")
    absent = Digest.of(b"never stored")
    cache = await FileCache.open(tmp_path, 1 << 30)
    store.corrupt = True
    handle = cache.read_ahead_for([(digest, False)], store)
    with pytest.raises(Internal, match="corrupt"):
        await cache.ensure({(digest, False)}, store)
    handle.close()
    assert (digest, False) not in cache and not cached(cache, digest, False).exists()
    store.corrupt = False
    handle = cache.read_ahead_for([(digest, False), (absent, False)], store)
    with pytest.raises(MissingBlobs) as caught:
        await cache.ensure({(digest, False), (absent, False)}, store)
    handle.close()
    assert set(caught.value.digests) == {absent}
    assert cached(cache, digest, False).read_bytes() == b"the real content"


async def test_cancelling_one_fetch_leaves_a_shared_read_ahead_to_the_other(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, b"for the first", b"for the second")
    cache = await FileCache.open(tmp_path, 1 << 30)
    store.gate = asyncio.Event()
    handle = cache.read_ahead_for([(d, False) for d in digests], store)
    first = asyncio.create_task(cache.ensure({(digests[0], False)}, store))
    second = asyncio.create_task(cache.ensure({(digests[1], False)}, store))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    store.gate.set()
    await second
    handle.close()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert cached(cache, digests[1], False).read_bytes() == b"for the second"
    assert len(store.get_many_calls) == 1


async def test_files_written_in_place_join_the_cache_only_once_the_inputs_are_placed(
        store: CountingStore, tmp_path: Path) -> None:
    [digest] = await put(store, b"written in place")
    cache = await FileCache.open(tmp_path / "cache", 1 << 30)
    placed = tmp_path / "tree-file"
    placed.write_bytes(b"written in place")
    os.chmod(placed, 0o444)
    cache._inflight[digest] = asyncio.get_running_loop().create_future()  # as a placer's fetch leaves it
    inputs_placed = asyncio.Event()
    cache.adopt_later([((digest, False), str(placed))], inputs_placed)
    waiting = asyncio.create_task(cache.ensure({(digest, False)}, store))  # waits for the adoption
    await asyncio.sleep(0.05)
    assert (digest, False) not in cache and not waiting.done()
    inputs_placed.set()
    await waiting
    await cache.drain()
    assert (digest, False) in cache and store.get_many_calls == []
    assert os.stat(cached(cache, digest, False)).st_ino == os.stat(placed).st_ino


async def test_a_read_ahead_is_one_batch_of_the_smallest_blobs(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, *(b"x" * size for size in (50, 10, 40, 20, 30)))
    ahead = ReadAhead(max_bytes=1 << 20, max_blobs=2)
    handle = ahead.start(digests, store)
    assert store.get_many_calls == []  # asked for once the loop turns
    rest, reads = ahead.take(digests)
    assert set(rest) == {d for d in digests if d.size_bytes >= 30} and len(reads) == 1
    assert set(await reads.pop()) == {d for d in digests if d.size_bytes < 30}
    handle.close()
    small = ReadAhead(max_bytes=35, max_blobs=10)  # bounded by bytes too
    small.start(digests, store).close()
    await asyncio.sleep(0)
    assert [d.size_bytes for d in store.get_many_calls[-1]] == [10, 20]
    alone = ReadAhead(max_bytes=5, max_blobs=10)  # and one blob at least
    alone.start(digests, store).close()
    await asyncio.sleep(0)
    assert [d.size_bytes for d in store.get_many_calls[-1]] == [10]


async def test_a_huge_tree_is_looked_at_only_as_far_as_a_read_ahead_needs(tmp_path: Path) -> None:
    store = CountingStore(MemoryStore(max_bytes=1 << 30))
    count = READ_AHEAD_SCAN + 500
    def content(i: int) -> bytes:  # the files past the scan are the smallest: a read ahead of all would take them
        return f"{i}".encode() if i >= READ_AHEAD_SCAN else f"file {i:06d}".encode()

    tree = {f"f{i:05d}": content(i) for i in range(count)}
    root = await put_tree(store.inner, {"src": tree})
    builder = InputRootBuilder(await FileCache.open(tmp_path / "cache", 1 << 30), DirectoryCache())
    await builder.layout(root, store)
    handle = builder.read_ahead(root, store, LINKS, set())
    await asyncio.sleep(0)
    handle.close()
    assert len(store.get_many_calls[-1]) == BATCH_BLOBS  # one batch, chosen from the first files
    assert {Digest.of(content(i)) for i in range(READ_AHEAD_SCAN, count)}.isdisjoint(store.get_many_calls[-1])


async def test_blobs_the_lease_carried_are_taken_without_a_read(store: CountingStore, tmp_path: Path) -> None:
    contents = [f"carried {i}".encode() for i in range(30)]
    digests = await put(store, *contents)
    cache = await FileCache.open(tmp_path, 1 << 30)
    keys = [(d, i % 2 == 0) for i, d in enumerate(digests)]
    carried = dict(zip(digests[:20], contents[:20]))  # the lease brought two thirds of them
    handle = cache.read_ahead_for(keys, store, carried)
    await cache.ensure(set(keys), store)
    handle.close()
    assert cache.read_ahead.carried == 20
    assert store.get_many_calls == [sorted(digests[20:], key=lambda d: d.size_bytes)]  # only the rest is read
    for (digest, executable), data in zip(keys, contents):
        assert cached(cache, digest, executable).read_bytes() == data
        assert os.access(cached(cache, digest, executable), os.X_OK) == executable


async def test_a_carried_blob_that_does_not_match_its_digest_is_read_from_the_cas(
    store: CountingStore, tmp_path: Path
) -> None:
    contents = [b"first input", b"second input"]
    digests = await put(store, *contents)
    cache = await FileCache.open(tmp_path, 1 << 30)
    keys = {(d, False) for d in digests}
    carried = {digests[0]: contents[0], digests[1]: b"not the second"}
    handle = cache.read_ahead_for(list(keys), store, carried)
    await cache.ensure(keys, store)
    handle.close()
    assert len(store.get_many_calls) == 1  # the CAS's own copies, once
    for digest, data in zip(digests, contents):
        assert cached(cache, digest, False).read_bytes() == data
    assert cache.fetched_blobs == 2
