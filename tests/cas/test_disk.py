"""DiskStore on real files under tmp_path: eviction, races, aborted writes, overwrites, reads.

The behaviour every store shares is in test_store_contract.py; restarts, crashes
and the index snapshot are in test_disk_restart.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from cas.digest import Digest
from cas.disk.store import DiskStore
from cas.errors import NotFound, OutOfRange, ResourceExhausted
from tests.cas.disk_support import (
    MiB,
    assert_index_matches_files,
    blob,
    open_store,
    temp_files,
    value_files,
)
from tests.cas.streams import StreamBroke, chunks_of, read_all

@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DiskStore]:
    s = await open_store(tmp_path / "store")
    yield s
    await s.aclose()


# -- restart -------------------------------------------------------------------------


async def test_eviction_removes_least_recently_used_until_under_the_cap(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root, max_bytes=3000)
    try:
        (a, da), (b, db), (c, dc), (d, dd) = (blob(i, 1000) for i in range(4))
        for digest, data in ((a, da), (b, db), (c, dc)):
            await store.put_bytes(digest, data)
        assert await store.find_missing([a]) == set()  # a is now newer than b
        await store.put_bytes(d, dd)
        assert await store.find_missing([a, b, c, d]) == {b}
        assert store.total_bytes == 3000 and len(store) == 3
        await store.drain()
        assert len(value_files(root)) == 3
        assert not any(b.hash in p.name for p in value_files(root))
    finally:
        await store.aclose()


async def test_value_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store", max_bytes=1000)
    try:
        digest, data = blob(1, 1001)
        with pytest.raises(ResourceExhausted, match="1001 bytes is larger than"):
            await store.put_bytes(digest, data)
        with pytest.raises(ResourceExhausted):
            await store.write(digest, chunks_of(data, size=100))
        assert await store.find_missing([digest]) == {digest}
        assert temp_files(tmp_path / "store") == []
    finally:
        await store.aclose()


async def test_reader_keeps_reading_a_value_evicted_midway(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store", max_bytes=5 * MiB, chunk_size=256 << 10)
    try:
        digest, data = blob(7, 3 * MiB)
        await store.write(digest, chunks_of(data))
        reader = store.read(digest)
        first = await reader.__anext__()
        await store.put_bytes(*blob(8, 3 * MiB))  # pushes the value being read out
        await store.drain()
        assert store.path_of(digest) is None
        rest = [chunk async for chunk in reader]
        assert first + b"".join(rest) == data
    finally:
        await store.aclose()


# -- concurrency ---------------------------------------------------------------------


async def test_concurrent_writers_of_one_blob_leave_one_correct_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root, write_buffer=256 << 10)
    try:
        digest, data = blob(5, 3 * MiB + 17)
        await asyncio.gather(*(store.write(digest, chunks_of(data, size=100_000, pause=True)) for _ in range(16)))
        small, small_data = blob(6, 500)
        await asyncio.gather(*(store.put_bytes(small, small_data) for _ in range(16)))
        assert len(store) == 2
        assert store.total_bytes == len(data) + len(small_data)
        assert await read_all(store, digest) == data
        await store.drain()
        assert len(value_files(root)) == 2
        assert temp_files(root) == []
    finally:
        await store.aclose()


async def test_concurrent_overwrites_with_different_lengths_keep_accounting(tmp_path: Path) -> None:
    """Action cache style: many writers race to replace one key with values of other lengths."""
    root = tmp_path / "store"
    store = await open_store(root)
    try:
        key = Digest.of(b"an action")
        values = [bytes([i]) * (10 + i) for i in range(12)]
        await asyncio.gather(*(store.write(key, chunks_of(v, size=4, pause=True)) for v in values))
        stored = await store.get_bytes(key)
        assert stored in values
        assert len(store) == 1 and store.total_bytes == len(stored)
        assert len(value_files(root)) == 1
    finally:
        await store.aclose()


async def test_writes_rewrites_and_evictions_racing_keep_index_and_files_in_step(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root, max_bytes=40_000, write_buffer=4096)
    try:
        blobs = [blob(i, 1000 + i) for i in range(120)]

        async def churn(worker: int) -> None:
            for round_ in range(40):
                digest, data = blobs[(worker * 7 + round_ * 3) % len(blobs)]
                if round_ % 3 == 0:
                    await store.write(digest, chunks_of(data, size=300, pause=True))
                elif round_ % 3 == 1:
                    await store.put_many(dict(blobs[(worker + round_ + k) % len(blobs)] for k in range(5)))
                else:
                    assert (await store.get_many([digest])).get(digest, data) == data

        await asyncio.gather(*(churn(w) for w in range(8)))
        await store.drain()
        assert store.evicted > 0
        assert_index_matches_files(store, root)
        assert temp_files(root) == []
    finally:
        await store.aclose()


async def test_cancelled_read_closes_its_file(store: DiskStore) -> None:
    digest, data = blob(3, 4 * MiB)
    await store.write(digest, chunks_of(data))
    before = len(os.listdir("/proc/self/fd"))
    reader = cast(AsyncGenerator[bytes, None], store.read(digest))  # read() is an async generator
    await reader.__anext__()
    await reader.aclose()
    await store.drain()
    assert len(os.listdir("/proc/self/fd")) == before


# -- all or nothing ------------------------------------------------------------------


@pytest.mark.parametrize("size", [10_000, 5 * MiB], ids=["one-buffer", "many-buffers"])
async def test_aborted_stream_leaves_no_file_and_no_temp_file(tmp_path: Path, size: int) -> None:
    root = tmp_path / "store"
    store = await open_store(root, write_buffer=MiB)
    try:
        digest, data = blob(4, size)
        with pytest.raises(StreamBroke):
            await store.write(digest, chunks_of(data, size=size // 4, fail_after=3))
        assert await store.find_missing([digest]) == {digest}
        assert value_files(root) == [] and temp_files(root) == []
        assert store.total_bytes == 0
    finally:
        await store.aclose()


async def test_cancelled_stream_leaves_no_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root, write_buffer=MiB)
    stalled = asyncio.Event()

    async def stalls_midway() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * MiB
        stalled.set()
        await asyncio.Event().wait()  # the client goes quiet
        yield b""

    try:
        digest = Digest.of(b"never finished")
        task = asyncio.create_task(store.write(digest, stalls_midway()))
        await stalled.wait()
        assert len(temp_files(root)) == 1  # it was being written to disk
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert temp_files(root) == [] and value_files(root) == []
        assert await store.find_missing([digest]) == {digest}
    finally:
        await store.aclose()


async def test_cancellation_at_any_point_leaves_no_temp_file(tmp_path: Path) -> None:
    """Cancel streamed writes after 0, 1, 2, ... loop turns: while waiting for a thread,
    between chunks, while committing. Nothing half-done may remain."""
    root = tmp_path / "store"
    store = await open_store(root, write_buffer=128 << 10, chunk_size=128 << 10)
    try:
        digest, data = blob(9, MiB)
        for turns in range(60):
            task = asyncio.create_task(store.write(digest, chunks_of(data, size=64 << 10, pause=True)))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.drain()
        assert temp_files(root) == []
        assert_index_matches_files(store, root)
        if store.path_of(digest) is not None:
            assert await read_all(store, digest) == data
    finally:
        await store.aclose()


async def test_truncated_file_is_not_returned_by_get_many(store: DiskStore) -> None:
    digest, data = blob(3, 2000)
    await store.put_bytes(digest, data)
    os.truncate(store.path_of(digest) or "", 1999)
    assert await store.get_many([digest]) == {}
    assert await store.get_or_none(digest) is None
    assert await store.find_missing([digest]) == {digest}


# -- overwrite (action cache semantics) ----------------------------------------------


async def test_overwrite_with_another_length_updates_accounting(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    key = Digest.of(b"action")  # the value is not the digest's content
    await store.put_bytes(key, b"a" * 10)
    assert store.total_bytes == 10
    await store.put_bytes(key, b"b" * 300)
    assert store.total_bytes == 300 and len(store) == 1
    await store.write(key, chunks_of(b"c" * 50, size=7))
    assert store.total_bytes == 50
    assert await store.get_bytes(key) == b"c" * 50
    assert len(value_files(root)) == 1
    await store.aclose()
    store = await open_store(root)
    try:
        assert await store.get_bytes(key) == b"c" * 50 and store.total_bytes == 50
    finally:
        await store.aclose()


async def test_overwrite_with_same_length_replaces_the_value(store: DiskStore) -> None:
    key = Digest.of(b"action")
    await store.put_bytes(key, b"first value")
    await store.put_bytes(key, b"other value")
    assert await store.get_bytes(key) == b"other value"
    assert store.total_bytes == 11


async def test_identical_put_does_not_rewrite_the_file(store: DiskStore) -> None:
    digest, data = blob(1, 4096)
    await store.put_bytes(digest, data)
    inode = os.stat(store.path_of(digest) or "").st_ino
    assert await store.put_many({digest: data}) == {}
    assert os.stat(store.path_of(digest) or "").st_ino == inode
    assert len(store) == 1 and store.total_bytes == 4096


async def test_find_missing_answers_from_the_index_and_reads_heal_it(store: DiskStore) -> None:
    digest, data = blob(1, 100)
    await store.put_bytes(digest, data)
    os.unlink(store.path_of(digest) or "")  # removed behind the store's back
    assert await store.find_missing([digest]) == set()  # no disk access
    with pytest.raises(NotFound):
        await read_all(store, digest)
    assert await store.find_missing([digest]) == {digest}
    assert store.total_bytes == 0


async def test_read_ranges_and_errors(store: DiskStore) -> None:
    digest, data = blob(2, 3 * MiB + 5)
    await store.write(digest, chunks_of(data, size=MiB // 3))
    assert await read_all(store, digest, offset=MiB - 1, limit=MiB + 2) == data[MiB - 1 : 2 * MiB + 1]
    assert await read_all(store, digest, offset=len(data)) == b""
    assert all(len(c) <= MiB for c in [c async for c in store.read(digest)])
    with pytest.raises(OutOfRange, match="past the end"):
        await read_all(store, digest, offset=len(data) + 1)
    with pytest.raises(NotFound, match="not found in test"):
        await read_all(store, blob(3, 10)[0])


async def test_get_many_and_put_many_mix_present_and_absent(store: DiskStore) -> None:
    blobs = dict(blob(i, i * 37) for i in range(1, 50))
    assert await store.put_many(blobs) == {}
    absent = blob(1000, 10)[0]
    assert await store.get_many(list(blobs) + [absent]) == blobs
    with pytest.raises(ResourceExhausted, match="over the 10-byte limit"):
        await store.get_bytes(blob(1, 37)[0], max_size=10)


async def test_fsync_mode_stores_and_reads(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store", fsync=True, write_buffer=MiB)
    try:
        small, small_data = blob(1, 100)
        big, big_data = blob(2, 3 * MiB)
        await store.put_bytes(small, small_data)
        await store.write(big, chunks_of(big_data))
        assert await store.get_bytes(small) == small_data
        assert await read_all(store, big) == big_data
    finally:
        await store.aclose()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store")
    await store.aclose()
    with pytest.raises(Exception, match="closed"):
        await store.put_bytes(*blob(1, 10))


async def test_close_with_a_write_in_progress_leaves_no_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root, write_buffer=MiB)
    stalled = asyncio.Event()
    resume = asyncio.Event()

    async def stalls_midway() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * MiB
        stalled.set()
        await resume.wait()
        yield b"y" * MiB

    task = asyncio.create_task(store.write(Digest.of(b"unfinished"), stalls_midway()))
    await stalled.wait()
    await store.aclose()
    resume.set()  # the client carries on, into a closed store
    with pytest.raises(Exception, match="closed"):
        await task
    assert temp_files(root) == [] and value_files(root) == []
