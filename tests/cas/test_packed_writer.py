"""PackedWriter: group commit, and a failed batch failing exactly its own values.

Each batch write is held in its thread by a gate, so the test decides what is
queued while a batch is being written.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import ResourceExhausted
from cas.localfs.io_lane import IoLane
from cas.packed import writer as writer_module
from cas.packed.index import PackedIndex
from cas.packed.segments import Segment
from cas.packed.writer import PackedWriter
from tests.support.processes import PATIENCE_S


@dataclass
class Appends:
    """Every batch write the writer starts, with gates to hold or fail each one."""

    batches: list[list[bytes]] = field(default_factory=list)  # the values of each batch
    gates: list[threading.Event] = field(default_factory=list)
    failing: set[int] = field(default_factory=set)  # batch numbers that fail like a full disk
    hold: bool = True

    def open(self, number: int) -> None:
        self.gates[number].set()

    def open_all(self) -> None:
        self.hold = False
        for gate in self.gates:
            gate.set()


@pytest.fixture
def appends(monkeypatch: pytest.MonkeyPatch) -> Appends:
    seen = Appends()
    real = writer_module._write_batch

    def write_batch(segment: Segment, create: bool, parts: list[bytes], offset: int, fsync: bool) -> None:
        number = len(seen.batches)
        seen.batches.append(list(parts[1::2]))  # a record is (header + hash, value)
        gate = threading.Event()
        if not seen.hold:
            gate.set()
        seen.gates.append(gate)
        gate.wait()
        if number in seen.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(segment, create, parts, offset, fsync)

    monkeypatch.setattr(writer_module, "_write_batch", write_batch)
    return seen


@pytest.fixture
async def writer(tmp_path: Path, appends: Appends) -> AsyncIterator[PackedWriter]:
    index = PackedIndex([], {}, next_seq=1)
    lane = IoLane(ThreadPoolExecutor(3), 3, "test")
    writer = PackedWriter(str(tmp_path), index, lane, segment_size=1 << 20, batch_bytes=64 << 10, fsync=False, name="test")
    yield writer
    appends.open_all()  # before anything waits for the threads
    await writer.drain()
    active = index.active
    if active is not None:
        await writer.seal(active)
    await lane.shutdown()
    for segment in index.segments:
        segment.close_map()


def value(n: int, size: int = 100) -> tuple[Digest, bytes]:
    data = bytes([n % 256]) * size
    return Digest.of(data), data


async def started(appends: Appends, count: int) -> None:
    """Wait until ``count`` batch writes have started in their threads (the limit only
    stops a hang: a thread can take seconds to start on a loaded machine)."""
    give_up = asyncio.get_running_loop().time() + PATIENCE_S
    while asyncio.get_running_loop().time() < give_up:
        if len(appends.batches) >= count:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"{count} batches never started (saw {len(appends.batches)})")


def stored(writer: PackedWriter, items: Sequence[tuple[Digest, bytes]]) -> bool:
    entries = writer.index.entries
    return all(
        d in entries and entries[d].segment.value(entries[d].offset, entries[d].length) == data for d, data in items
    )


async def test_puts_arriving_during_a_write_share_the_next_batch(writer: PackedWriter, appends: Appends) -> None:
    first = value(1)
    waiting = [value(n) for n in range(2, 6)]
    first_put = writer.put([first])
    await started(appends, 1)
    others = [writer.put([item]) for item in waiting]  # four callers while batch 0 is in its thread
    await asyncio.sleep(0.01)
    assert len(appends.batches) == 1  # they wait: one append at a time
    appends.open(0)
    await started(appends, 2)
    assert appends.batches[1] == [data for _, data in waiting]  # all four, in one write
    appends.open(1)
    assert await first_put == {}
    assert [await put for put in others] == [{}] * 4
    assert writer.batches_written == 2
    assert stored(writer, [first, *waiting])


async def test_a_put_many_is_one_batch_when_it_fits(writer: PackedWriter, appends: Appends) -> None:
    appends.open_all()
    items = [value(n, 1000) for n in range(20)]
    assert await writer.put(items) == {}
    assert len(appends.batches) == 1
    assert writer.batches_written == 1


async def test_a_failed_batch_fails_exactly_its_members(writer: PackedWriter, appends: Appends) -> None:
    before, doomed, after = value(1), [value(2), value(3)], value(4)
    appends.failing.add(1)
    first = writer.put([before])
    await started(appends, 1)
    failing = [writer.put([item]) for item in doomed]  # queued together: batch 1
    appends.open(0)
    await started(appends, 2)
    later = writer.put([after])  # queued while batch 1 is in its thread: batch 2
    appends.open(1)
    await started(appends, 3)
    appends.open(2)

    assert await first == {}
    assert await later == {}
    for put, (digest, _) in zip(failing, doomed):
        failures = await put
        assert list(failures) == [digest]
        assert isinstance(failures[digest], ResourceExhausted)  # a full disk, said so
    assert stored(writer, [before, after])
    assert all(digest not in writer.index.entries for digest, _ in doomed)
    assert writer.batches_written == 2
    # The segment the failed batch was appended to takes no more writes; the next batch started another.
    assert writer.index.entries[after[0]].segment is not writer.index.entries[before[0]].segment


async def test_a_caller_whose_values_span_batches_hears_once_all_are_written(writer: PackedWriter, appends: Appends) -> None:
    appends.open_all()
    items = [value(n, 30_000) for n in range(5)]  # 150 KB: more than one 64 KiB batch
    assert await writer.put(items) == {}
    assert len(appends.batches) >= 3
    assert stored(writer, items)
