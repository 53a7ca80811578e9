"""PackedStore restarts: clean (index files), after a crash (scan), with torn and damaged
batches, and after a real process is killed mid-write.

A crash is simulated by abandoning the store (its open segment never sealed), damage
by cutting or flipping bytes of the segment files, as a power cut or a bad disk would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import FailedPrecondition
from cas.packed.format import BATCH_HEADER
from cas.packed.segments import INDEX_SUFFIX
from cas.packed.startup import LAYOUT_MARKER
from tests.cas.packed_support import (
    SMALL,
    abandon,
    batch_start,
    blobs,
    flip_byte,
    index_file,
    open_store,
    present,
    segment_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_clean_restart_reads_index_files_only(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    values = blobs(0, 150)  # about three segments
    for start in range(0, 150, 30):
        part = dict(list(values.items())[start : start + 30])
        assert await store.put_many(part) == {}
    total, count = store.total_bytes, len(store.segments)
    await store.aclose()

    store = await open_store(tmp_path, **SMALL)
    try:
        assert store.opened_with.scanned == 0
        assert store.opened_with.from_index_files == count >= 3
        assert store.total_bytes == total
        assert await present(store, values) == values
        more = blobs(1000, 5)
        assert await store.put_many(more) == {}  # writes go to a new segment
        assert store.segments[-1].seq > count
        assert await present(store, more) == more
    finally:
        await store.aclose()


async def test_crash_keeps_every_acknowledged_value(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    values = blobs(0, 100)
    for start in range(0, 100, 10):
        assert await store.put_many(dict(list(values.items())[start : start + 10])) == {}
    open_segment = store.segments[-1]
    await abandon(store)
    assert not index_file(open_segment).exists()

    store = await open_store(tmp_path, **SMALL)
    try:
        assert store.opened_with.scanned == 1
        assert await present(store, values) == values
        assert index_file(store.segments[-1]).exists(), "the scanned segment is sealed at open"
    finally:
        await store.aclose()


async def test_torn_tail_is_cut_off_and_never_served(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    first, second = blobs(0, 20), blobs(100, 20)
    await store.put_many(first)
    await store.put_many(second)
    segment = store.segments[-1]
    second_at = batch_start(segment, next(iter(second)))
    await abandon(store)
    path = segment_file(segment)
    os.truncate(path, second_at + BATCH_HEADER.size + 5000)  # the second batch was half written

    store = await open_store(tmp_path)
    try:
        assert store.opened_with.torn_tails == 1
        assert await present(store, {**first, **second}) == first
        assert await store.find_missing(second) == set(second)
        assert path.stat().st_size == second_at, "the torn batch is cut off the file"
        assert await store.put_many(second) == {}  # and can be written again
    finally:
        await store.aclose()
    store = await open_store(tmp_path)
    try:
        assert await present(store, {**first, **second}) == {**first, **second}
    finally:
        await store.aclose()


async def test_damaged_batch_body_is_skipped_and_later_batches_kept(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    a, b, c = blobs(0, 10), blobs(100, 10), blobs(200, 10)
    for part in (a, b, c):
        await store.put_many(part)
    segment = store.segments[-1]
    b_at = batch_start(segment, next(iter(b)))
    await abandon(store)
    flip_byte(segment_file(segment), b_at + BATCH_HEADER.size + 3000)  # a bad sector inside b

    store = await open_store(tmp_path)
    try:
        assert store.opened_with.damaged_batches == 1
        assert await present(store, {**a, **b, **c}) == {**a, **c}
    finally:
        await store.aclose()


async def test_damaged_batch_header_ends_the_segment(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    a, b, c = blobs(0, 10), blobs(100, 10), blobs(200, 10)
    for part in (a, b, c):
        await store.put_many(part)
    segment = store.segments[-1]
    b_at = batch_start(segment, next(iter(b)))
    await abandon(store)
    flip_byte(segment_file(segment), b_at + 6)  # b's length field: nothing after it can be trusted

    store = await open_store(tmp_path)
    try:
        assert await present(store, {**a, **b, **c}) == a
        assert segment_file(store.segments[-1]).stat().st_size == b_at
    finally:
        await store.aclose()


async def test_lost_page_is_detected(tmp_path: Path) -> None:
    """A power cut can persist later pages but not an earlier one: zeros in mid-batch."""
    store = await open_store(tmp_path)
    values = blobs(0, 30, size=500)
    await store.put_many(values)
    segment = store.segments[-1]
    await abandon(store)
    with open(segment_file(segment), "r+b") as f:
        f.seek(8192)
        f.write(bytes(4096))

    store = await open_store(tmp_path)
    try:
        assert await present(store, values) == {}
    finally:
        await store.aclose()


async def test_damaged_index_file_falls_back_to_a_scan(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    values = blobs(0, 120)
    await store.put_many(values)
    await store.aclose()
    first_index = sorted(tmp_path.glob("*.idx"))[0]
    flip_byte(first_index, 40)

    store = await open_store(tmp_path, **SMALL)
    try:
        assert store.opened_with.scanned == 1
        assert await present(store, values) == values
    finally:
        await store.aclose()


async def test_strays_are_removed_at_open(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    values = blobs(0, 10)
    await store.put_many(values)
    await store.aclose()
    (tmp_path / "00000000000000ff.idx").write_bytes(b"an index file whose segment is gone")
    (tmp_path / "0000000000000100.seg").write_bytes(b"not a segment header at all, damaged" * 2)
    (tmp_path / "0000000000000001.idx.tmp").write_bytes(b"half-written index file")
    (tmp_path / "notes.txt").write_text("not ours: left alone")

    store = await open_store(tmp_path, **SMALL)
    try:
        assert await present(store, values) == values
        names = {p.name for p in tmp_path.iterdir()}
        assert not names & {"00000000000000ff.idx", "0000000000000100.seg", "0000000000000001.idx.tmp"}
        assert "notes.txt" in names
        assert await store.put_many(blobs(50, 1)) == {}
        assert store.segments[-1].seq == 0x101, "numbering continues after the highest segment seen"
    finally:
        await store.aclose()


async def test_newest_value_wins_after_restart(tmp_path: Path) -> None:
    """Action cache semantics: a key rewritten in a later batch or segment keeps the later value."""
    store = await open_store(tmp_path, **SMALL)
    key = Digest.of(b"an action")
    await store.put_bytes(key, b"first result")
    await store.put_many(blobs(0, 80))  # the next writes land in a later segment
    await store.put_bytes(key, b"second result, longer")
    await store.put_bytes(key, b"third")
    await abandon(store)

    store = await open_store(tmp_path, **SMALL)
    try:
        assert await store.get_bytes(key) == b"third"
    finally:
        await store.aclose()


async def test_smaller_cap_at_open_evicts_the_oldest_segments(tmp_path: Path) -> None:
    options = {**SMALL, "max_bytes": 1024 * 1024}
    store = await open_store(tmp_path, **options)
    old, new = blobs(0, 400), blobs(1000, 40)
    await store.put_many(old)
    await store.put_many(new)
    await store.aclose()

    store = await open_store(tmp_path, **SMALL)  # a quarter of the room
    try:
        await store.drain()
        assert store.total_bytes <= SMALL["max_bytes"]
        assert await present(store, new) == new
        assert len(await present(store, old)) < len(old)
        assert len(list(tmp_path.glob("*.seg"))) == len(store.segments)
    finally:
        await store.aclose()


async def test_foreign_layout_and_second_opener_are_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a")
    try:
        with pytest.raises(FailedPrecondition, match="already in use"):
            await open_store(tmp_path / "a")
    finally:
        await store.aclose()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / LAYOUT_MARKER).write_text("some future layout 9\n")
    with pytest.raises(FailedPrecondition, match="different layout"):
        await open_store(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".reapi-disk-store").write_text("reapi disk store layout 1\n")
    with pytest.raises(FailedPrecondition, match="holds a disk store"):
        await open_store(tmp_path / "c")
    store = await open_store(tmp_path / "a")  # the lock died with the first store
    await store.aclose()


_WRITER = """
import asyncio, sys
from cas.packed.store import PackedStore
from tests.cas.packed_support import blobs

async def main(root):
    store = await PackedStore.open(root, 64 << 20, "killed", segment_size=1 << 20, max_value_size=4096)
    batch = 0
    while True:
        assert await store.put_many(blobs(batch * 100, 100)) == {}
        print(batch, flush=True)
        batch += 1

asyncio.run(main(sys.argv[1]))
"""


async def test_process_killed_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        acknowledged = -1
        assert child.stdout is not None
        # More than a segment's worth, and until two seals (in background threads,
        # each with an fdatasync) have written their index files: on a busy disk
        # they can lag many batches behind.
        while acknowledged < 30 or len(list(tmp_path.glob(f"*{INDEX_SUFFIX}"))) < 2:
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, "the writer died on its own"
            acknowledged = int(line)
            assert acknowledged < 500, "two segments were never sealed (the store would start evicting)"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    store = await open_store(tmp_path, segment_size=1 << 20, max_value_size=4096)
    try:
        acked = blobs(0, (acknowledged + 1) * 100)
        assert await present(store, acked) == acked
        assert store.opened_with.from_index_files >= 2
        later = blobs((acknowledged + 1) * 100, 500)
        await present(store, later)  # whatever survived of the unacknowledged ones is intact
    finally:
        await store.aclose()


async def test_segment_header_names_its_sequence_number(tmp_path: Path) -> None:
    """A segment file renamed to another number is not trusted (its batches say otherwise)."""
    store = await open_store(tmp_path, **SMALL)
    values = blobs(0, 5)
    await store.put_many(values)
    segment = store.segments[-1]
    await abandon(store)
    segment_file(segment).rename(tmp_path / "0000000000000009.seg")

    store = await open_store(tmp_path, **SMALL)
    try:
        assert await store.find_missing(values) == set(values)
        assert store.opened_with.removed == ["0000000000000009.seg"]
    finally:
        await store.aclose()
