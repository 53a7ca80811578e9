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
from worker.file_cache import FileCache


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
