"""DiskStore on real files under tmp_path: restarts, eviction, races, crashes, overwrites.

The behaviour every store shares is in test_store_contract.py; this file covers what
only a disk store can get wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.disk import DiskStore
from cas.disk_layout import LAYOUT_MARKER, TEMP_PREFIX
from cas.disk_snapshot import SNAPSHOT_FILE
from cas.errors import FailedPrecondition, NotFound, OutOfRange, ResourceExhausted
from tests.cas.streams import StreamBroke, chunks_of, read_all

MiB = 1 << 20


class Clock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def blob(seed: int, size: int) -> tuple[Digest, bytes]:
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return Digest.of(data), data


def shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/??/*") if p.is_file())


def value_files(root: Path) -> list[Path]:
    return [p for p in shard_files(root) if not p.name.startswith(TEMP_PREFIX)]


def temp_files(root: Path) -> list[Path]:
    return [p for p in shard_files(root) if p.name.startswith(TEMP_PREFIX)]


def as_if_crashed(root: Path) -> None:
    """Make a cleanly closed store look like its process died: no index snapshot."""
    (root / SNAPSHOT_FILE).unlink()


def as_if_rebooted(root: Path) -> None:
    """Make the snapshot look like it was written before a reboot."""
    path = root / SNAPSHOT_FILE
    document = json.loads(path.read_text())
    document["boot_id"] = "another boot"
    path.write_text(json.dumps(document))


RESTARTS = {"crash": as_if_crashed, "reboot": as_if_rebooted, "clean": lambda root: None}


async def open_store(root: Path, max_bytes: int = 64 * MiB, **options: object) -> DiskStore:
    return await DiskStore.open(root, max_bytes=max_bytes, name="test", **options)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DiskStore]:
    s = await open_store(tmp_path / "store")
    yield s
    await s.aclose()


# -- restart -------------------------------------------------------------------------


@pytest.mark.parametrize("restart", RESTARTS)
async def test_restart_keeps_values_and_accounting(tmp_path: Path, restart: str) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    blobs = dict(blob(i, 100 + i) for i in range(20))
    assert await store.put_many(blobs) == {}
    big_digest, big = blob(99, 3 * MiB)
    await store.write(big_digest, chunks_of(big))
    total = store.total_bytes
    await store.aclose()
    RESTARTS[restart](root)

    store = await open_store(root)
    try:
        assert len(store) == 21
        assert store.total_bytes == total == sum(map(len, blobs.values())) + len(big)
        assert await store.find_missing(list(blobs) + [big_digest]) == set()
        assert await store.get_many(blobs) == blobs
        assert await read_all(store, big_digest) == big
    finally:
        await store.aclose()


async def test_crash_keeps_lru_order_roughly(tmp_path: Path) -> None:
    """Without a snapshot, an access persisted as mtime still protects the value after a restart."""
    root = tmp_path / "store"
    clock = Clock()
    store = await open_store(root, touch_interval=60, clock=clock)
    (a, da), (b, db), (c, dc) = blob(1, 1000), blob(2, 1000), blob(3, 1000)
    for digest, data in ((a, da), (b, db), (c, dc)):
        await store.put_bytes(digest, data)
    clock.offset += 3600  # an hour later, a is used again
    assert await store.find_missing([a]) == set()
    await store.aclose()
    as_if_crashed(root)

    store = await open_store(root, max_bytes=2500, clock=clock)  # room for two: evicts the oldest
    try:
        assert await store.find_missing([a, b, c]) == {b}
    finally:
        await store.aclose()


async def test_clean_restart_keeps_the_exact_lru_order(tmp_path: Path) -> None:
    """The snapshot keeps the order even where mtimes (refreshed lazily) cannot tell."""
    root = tmp_path / "store"
    store = await open_store(root, touch_interval=3600)
    blobs = [blob(i, 100) for i in range(10)]
    await store.put_many(dict(blobs))
    used = [blobs[i][0] for i in (7, 2, 9, 0, 4)]
    for digest in used:  # all within the touch interval: no mtime changes
        assert await store.has(digest)
    await store.aclose()
    assert (root / SNAPSHOT_FILE).exists()

    store = await open_store(root, max_bytes=500)  # keeps the five most recently used
    try:
        assert not (root / SNAPSHOT_FILE).exists()  # consumed: a crash from here means a full scan
        assert await store.find_missing([d for d, _ in blobs]) == {d for d, _ in blobs} - set(used)
    finally:
        await store.aclose()


async def test_snapshot_is_checked_against_the_files(tmp_path: Path) -> None:
    """Values removed while the store was closed are dropped; values added are adopted."""
    root = tmp_path / "store"
    store = await open_store(root)
    (a, da), (b, db), (c, dc) = blob(1, 100), blob(2, 200), blob(3, 300)
    await store.put_many({a: da, b: db})
    a_path = Path(store.path_of(a) or "")
    await store.aclose()
    a_path.unlink()
    c_path = root / "sha256" / c.hash[:2] / f"{c.hash}-{c.size_bytes}"
    c_path.parent.mkdir(exist_ok=True)
    c_path.write_bytes(dc)
    store = await open_store(root)
    try:
        assert await store.find_missing([a, b, c]) == {a}
        assert await store.get_bytes(c) == dc
        assert store.total_bytes == 500
    finally:
        await store.aclose()


async def test_access_time_is_persisted_lazily(tmp_path: Path) -> None:
    clock = Clock()
    store = await open_store(tmp_path / "store", touch_interval=60, clock=clock)
    try:
        digest, data = blob(1, 10)
        await store.put_bytes(digest, data)
        path = Path(store.path_of(digest) or "")
        written = path.stat().st_mtime
        clock.offset += 30  # within the interval: no disk write
        await store.find_missing([digest])
        await store.drain()
        assert path.stat().st_mtime == written
        clock.offset += 3600
        await store.find_missing([digest])
        await store.drain()
        assert abs(path.stat().st_mtime - clock()) < 5
    finally:
        await store.aclose()


# -- eviction ------------------------------------------------------------------------


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


async def test_open_evicts_when_the_cap_shrank(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    await store.put_many(dict(blob(i, 1000) for i in range(10)))
    await store.aclose()
    store = await open_store(root, max_bytes=4000)
    try:
        assert len(store) == 4 and store.total_bytes == 4000
        await store.drain()
        assert len(value_files(root)) == 4
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


def assert_index_matches_files(store: DiskStore, root: Path) -> None:
    """Every indexed value has its file, every file is indexed, and the byte count agrees."""
    on_disk = {str(p): p.stat().st_size for p in value_files(root)}
    indexed = {store.path_of(d): e.length for d, e in store._index.items()}
    assert indexed == on_disk
    assert store.total_bytes == sum(on_disk.values()) <= store.max_bytes


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
    reader = store.read(digest)
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


@pytest.mark.parametrize("restart", RESTARTS)
async def test_crash_leftovers_are_cleaned_at_open(tmp_path: Path, restart: str) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    digest, data = blob(1, 100)
    await store.put_bytes(digest, data)
    await store.aclose()
    RESTARTS[restart](root)
    shard = Path(store.path_of(digest) or "").parent
    (shard / f"{TEMP_PREFIX}17").write_bytes(b"half a blob")
    (shard.parent / "00").mkdir(exist_ok=True)
    (shard.parent / "00" / f"{TEMP_PREFIX}18").write_bytes(b"")
    assert len(temp_files(root)) == 2
    store = await open_store(root)
    try:
        assert temp_files(root) == []
        assert await store.get_bytes(digest) == data
    finally:
        await store.aclose()


@pytest.mark.parametrize("restart", ["crash", "reboot"])
async def test_truncated_file_is_never_served(tmp_path: Path, restart: str) -> None:
    """A power cut can persist a rename before the data; such a file must not be served."""
    root = tmp_path / "store"
    store = await open_store(root)
    (a, da), (b, db) = blob(1, 5000), blob(2, 5000)
    await store.put_many({a: da, b: db})
    a_path, b_path = Path(store.path_of(a) or ""), Path(store.path_of(b) or "")
    await store.aclose()
    RESTARTS[restart](root)
    os.truncate(a_path, 0)  # what delayed allocation leaves after a power cut
    store = await open_store(root)
    try:
        assert await store.find_missing([a, b]) == {a}
        assert not a_path.exists() and store.total_bytes == 5000
        # Damage while running (another process, a disk fault): caught at read time.
        os.truncate(b_path, 100)
        with pytest.raises(NotFound, match="damaged"):
            await read_all(store, b)
        assert await store.find_missing([b]) == {b}
        assert store.total_bytes == 0
        await store.drain()
        assert not b_path.exists()
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


@pytest.mark.parametrize("restart", RESTARTS)
async def test_crash_between_overwrite_rename_and_unlink_keeps_the_newer(tmp_path: Path, restart: str) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    key = Digest.of(b"action")
    await store.put_bytes(key, b"old")
    old_path = Path(store.path_of(key) or "")
    await store.put_bytes(key, b"newer value")
    new_path = Path(store.path_of(key) or "")
    await store.aclose()
    RESTARTS[restart](root)
    old_path.write_bytes(b"old")  # as if the unlink after the rename never happened
    os.utime(old_path, (time.time() - 100, time.time() - 100))
    store = await open_store(root)
    try:
        assert await store.get_bytes(key) == b"newer value"
        assert store.total_bytes == len(b"newer value")
        assert not old_path.exists() and new_path.exists()
    finally:
        await store.aclose()


# -- reads, index, opening -----------------------------------------------------------


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


async def test_second_open_of_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store")
    try:
        with pytest.raises(FailedPrecondition, match="already in use"):
            await open_store(tmp_path / "store")
    finally:
        await store.aclose()
    reopened = await open_store(tmp_path / "store")
    await reopened.aclose()


async def test_foreign_layout_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / LAYOUT_MARKER).write_text("some future layout 9\n")
    with pytest.raises(FailedPrecondition, match="different layout"):
        await open_store(root)


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store")
    await store.aclose()
    with pytest.raises(Exception, match="closed"):
        await store.put_bytes(*blob(1, 10))
