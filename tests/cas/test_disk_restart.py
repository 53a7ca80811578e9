"""DiskStore restarts: clean (index snapshot), after a crash and after a reboot (full scan).

A crash is simulated by removing the snapshot a clean close writes, a reboot by
changing the boot id recorded in it; a power cut's damage by truncating files.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.disk.layout import LAYOUT_MARKER, TEMP_PREFIX
from cas.disk.snapshot import SNAPSHOT_FILE
from cas.errors import FailedPrecondition, NotFound
from tests.cas.disk_support import (
    MiB,
    RESTARTS,
    Clock,
    as_if_crashed,
    blob,
    open_store,
    temp_files,
    value_files,
)
from tests.cas.streams import chunks_of, read_all

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
    await store.put_many({a: da, b: db, c: dc})  # the file system's clock may give them one mtime
    for digest in (b, c, a):  # used in this order, an hour apart: each access is persisted
        clock.offset += 3600
        assert await store.find_missing([digest]) == set()
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


async def test_cancelled_open_releases_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = await open_store(root)
    await store.put_many(dict(blob(i, 100) for i in range(100)))
    await store.aclose()
    opening = asyncio.create_task(open_store(root))
    await asyncio.sleep(0)  # the rebuild has started in its thread
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    give_up = asyncio.get_running_loop().time() + 60  # only stops a hang, however loaded the machine
    while True:  # the abandoned rebuild finishes, then unlocks
        try:
            store = await open_store(root)
            break
        except FailedPrecondition:
            if asyncio.get_running_loop().time() > give_up:
                pytest.fail("the directory stayed locked after the cancelled open")
            await asyncio.sleep(0.01)
    try:
        assert len(store) == 100
    finally:
        await store.aclose()
