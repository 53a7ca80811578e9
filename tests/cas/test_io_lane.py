"""IoLane: a cancelled caller never leaks what its thread call opened, nor loses its result.

The rule under test: once a call has started in a thread it runs to the end, and
whatever it produced (a descriptor, an index update) is still used or cleaned up
on the loop, whether or not anyone still waits for it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cas.errors import Unavailable
from cas.localfs.io_lane import IoLane, all_done, close_after, then


class Gates:
    """Events that hold thread calls. ``open_all`` runs before any lane shuts down, so
    a failing test cannot leave a thread blocked (shutdown, and the process's exit,
    would wait for it forever)."""

    def __init__(self) -> None:
        self._made: list[threading.Event] = []

    def __call__(self) -> threading.Event:
        self._made.append(threading.Event())
        return self._made[-1]

    def open_all(self) -> None:
        for event in self._made:
            event.set()


@pytest.fixture
def gates() -> Iterator[Gates]:
    made = Gates()
    yield made
    made.open_all()


@pytest.fixture
async def lane(gates: Gates) -> AsyncIterator[IoLane]:
    lane = IoLane(ThreadPoolExecutor(2), 1, "test")  # one slot: the order of calls is visible
    yield lane
    gates.open_all()
    await lane.shutdown()


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_a_caller_cancelled_while_waiting_for_a_slot_starts_nothing(lane: IoLane, gates: Gates) -> None:
    gate = gates()
    ran: list[str] = []
    busy = await lane.started(gate.wait)
    waiting = asyncio.create_task(lane.run(ran.append, "never"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    gate.set()
    await busy
    await lane.drain()
    assert waiting.cancelled()
    assert ran == []


async def test_a_cancelled_run_still_finishes_and_holds_its_slot_until_then(lane: IoLane, gates: Gates) -> None:
    gate = gates()
    finished: list[str] = []

    def slow() -> None:
        gate.wait()
        finished.append("slow")

    caller = asyncio.create_task(lane.run(slow))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    after = asyncio.create_task(lane.run(finished.append, "after"))
    await asyncio.sleep(0.01)
    assert finished == []  # the slot is still the slow call's
    gate.set()
    await after
    assert finished == ["slow", "after"]


async def test_a_descriptor_opened_for_a_cancelled_caller_is_closed_when_the_thread_ends(lane: IoLane, gates: Gates, tmp_path: Path) -> None:
    """The disk store's read opens a file in a thread; if its caller is cancelled
    meanwhile, nobody would close the descriptor but ``close_after``."""
    path = tmp_path / "value"
    path.write_bytes(b"data")
    gate = gates()
    opened: list[int] = []

    def open_slowly() -> int:
        gate.wait()
        fd = os.open(path, os.O_RDONLY)
        opened.append(fd)
        return fd

    async def reader() -> int:
        opening = await lane.started(open_slowly)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            close_after(opening, lambda: os.close(opening.result()))
            raise

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert opened == []  # the thread had not opened it yet
    gate.set()
    await lane.drain()
    assert len(opened) == 1
    assert not fd_is_open(opened[0])


async def test_close_after_closes_at_once_when_nothing_is_running() -> None:
    closed: list[bool] = []
    close_after(None, lambda: closed.append(True))
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    close_after(done, lambda: closed.append(True))
    assert closed == [True, True]


async def test_then_applies_the_result_even_when_the_waiter_is_cancelled(lane: IoLane, gates: Gates) -> None:
    """The commit path: a file renamed into place must reach the index even if the
    request that wrote it went away."""
    gate = gates()
    index: dict[str, int] = {}
    writing = await lane.started(lambda: gate.wait() and 42)
    applied = then(writing, lambda done: index.setdefault("value", done.result()))
    waiter = asyncio.ensure_future(asyncio.shield(applied))
    await asyncio.sleep(0.01)
    waiter.cancel()
    gate.set()
    await lane.drain()
    await asyncio.sleep(0)
    assert index == {"value": 42}
    assert await applied == 42


async def test_an_error_in_then_reaches_its_waiter_and_is_never_reported_as_lost(lane: IoLane, gates: Gates) -> None:
    def apply(done: asyncio.Future[None]) -> None:
        raise Unavailable("apply failed")

    with pytest.raises(Unavailable, match="apply failed"):
        await asyncio.shield(then(await lane.started(lambda: None), apply))

    reported: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
    lost = then(await lane.started(lambda: None), apply)  # nobody will read it
    await lane.drain()
    await asyncio.sleep(0)
    assert lost.done()
    del lost
    gc.collect()  # an unretrieved exception would be reported here
    assert reported == []


async def test_started_many_holds_one_slot_and_never_cancels_its_parts(gates: Gates) -> None:
    lane = IoLane(ThreadPoolExecutor(3), 1, "test")
    try:
        parts = [gates() for _ in range(3)]
        batch = await lane.started_many(lambda i: parts[i].wait() and i, [(0,), (1,), (2,)])
        other = asyncio.create_task(lane.run(lambda: "other"))
        await asyncio.sleep(0.01)
        assert not other.done()  # the batch took the one slot
        parts[0].set()
        parts[1].set()
        await asyncio.sleep(0.01)
        assert not batch.done()  # waits for every part
        parts[2].set()
        assert await batch == [0, 1, 2]
        assert await other == "other"
    finally:
        gates.open_all()
        await lane.shutdown()


async def test_all_done_raises_the_first_failure_only_after_every_part_ended() -> None:
    loop = asyncio.get_running_loop()
    parts = [loop.create_future() for _ in range(3)]
    combined = all_done(parts)
    parts[1].set_exception(Unavailable("part 1"))
    await asyncio.sleep(0)
    assert not combined.done()
    parts[0].set_result(0)
    parts[2].set_result(2)
    with pytest.raises(Unavailable, match="part 1"):
        await combined
    assert not any(part.cancelled() for part in parts)
    assert await all_done([]) == []


async def test_a_closed_lane_refuses_requests_but_finishes_background_work(gates: Gates) -> None:
    lane = IoLane(ThreadPoolExecutor(1), 1, "closing")
    gate = gates()
    done: list[str] = []
    def background() -> None:
        gate.wait()
        done.append("background")

    lane.start(background)
    lane.closed = True
    with pytest.raises(Unavailable, match="'closing' is closed"):
        await lane.run(done.append, "refused")
    shutting = asyncio.create_task(lane.shutdown())
    await asyncio.sleep(0.01)
    assert not shutting.done()  # drain waits for the background call
    gate.set()
    await shutting
    assert done == ["background"]
    late = lane.start(done.append, "cleanup after shutdown")  # runs inline, threads are gone
    assert late.done()
    assert done == ["background", "cleanup after shutdown"]
