"""IoLane: blocking file I/O in a store's own threads, bounded, and safe to cancel.

Why not plain ``asyncio.to_thread``: the default executor is shared with hashing
and everything else, and a cancelled ``to_thread`` call keeps running with nobody
to clean up after it. Here:
- callers wait for a slot on the event loop (a semaphore), so a cancelled request
  leaves no work queued in the executor;
- a call that has started always finishes. If its caller was cancelled meanwhile,
  its result can still be used or cleaned up (``then``, ``close_after``), so the
  in-memory index never disagrees with the files and no descriptor leaks;
- every call is tracked, so ``drain`` can wait for the lot before shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cas.errors import Unavailable
from cas.released import clear_finished_frames

T = TypeVar("T")
R = TypeVar("R")

# The smallest part of a batch worth its own thread.
MIN_PART = 64


class IoLane:
    def __init__(self, executor: ThreadPoolExecutor, limit: int, name: str) -> None:
        self._executor = executor
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._running: set[asyncio.Future[Any]] = set()
        self._name = name
        self.closed = False  # refuses new requests; background work still runs
        self._shut_down = False

    def _check_open(self) -> None:
        if self.closed:
            raise Unavailable(f"store {self._name!r} is closed")

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        if self._shut_down:
            # Cleanup that arrives after shutdown (a write cancelled as the store
            # closed) runs right here: rare, and small (an unlink, a close).
            done: asyncio.Future[T] = loop.create_future()
            try:
                done.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - handed to whoever awaits it
                done.set_exception(exc)
            return done
        future = loop.run_in_executor(self._executor, _releasing, fn, *args)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return future

    async def started(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Wait for a slot, start ``fn(*args)`` in a thread and return its future.

        Cancellation while waiting starts nothing. Once this returns, the call runs
        to the end whatever happens to the caller; the slot frees when it does.
        """
        self._check_open()
        await self._slots.acquire()
        try:
            self._check_open()
            future = self._submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    async def started_many(self, fn: Callable[..., T], arg_lists: Sequence[tuple[Any, ...]]) -> asyncio.Future[list[T]]:
        """Like ``started``, for one batch split into parts run in parallel threads (file
        system calls release the GIL, so small-file batches gain from it). The batch
        holds one slot; the future gives the parts' results in order, once all are done."""
        self._check_open()
        await self._slots.acquire()
        futures = []
        try:
            self._check_open()
            for args in arg_lists:
                futures.append(self._submit(fn, *args))
        finally:
            combined = all_done(futures)
            combined.add_done_callback(lambda _: self._slots.release())
        return combined

    def parts(self, items: list[T]) -> list[list[T]]:
        """A batch in parts for ``started_many``: one per thread, each big enough
        (``MIN_PART`` items) to be worth a hop."""
        count = max(1, min(self.limit, len(items) // MIN_PART))
        size = -(-len(items) // count) or 1
        return [items[i : i + size] for i in range(0, len(items), size)]

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread; for calls whose result needs no cleanup if abandoned."""
        return await asyncio.shield(await self.started(fn, *args))

    def start(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Background work (evictions, timestamp refreshes, cleanup): not bounded by
        the slots, but tracked so ``drain`` waits for it."""
        return self._submit(fn, *args)

    async def shutdown(self) -> None:
        """Refuse new requests, wait for all started work, and stop the threads."""
        self.closed = True
        await self.drain()
        self._shut_down = True
        self._executor.shutdown(wait=True)  # idle by now: returns at once

    async def drain(self) -> None:
        """Wait until every started call has finished (and its callbacks ran)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
            await asyncio.sleep(0)  # let done-callbacks that start more work run


def _releasing(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``; if it fails, its frames let go of their locals (the buffers of a
    failed write) now rather than when a collection finds the cycle (cas/released.py)."""
    try:
        return fn(*args)
    except BaseException as exc:
        clear_finished_frames(exc)
        raise


def all_done(futures: Sequence[asyncio.Future[T]]) -> asyncio.Future[list[T]]:
    """A future for all ``futures``' results, set once every one has finished.

    Unlike ``asyncio.gather`` it never cancels its children, which are thread calls
    that run to the end anyway; the first failure is raised after all are done.
    """
    combined: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
    remaining = len(futures)

    def one_done(_: asyncio.Future[T]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            return
        for future in futures:
            error = asyncio.CancelledError() if future.cancelled() else future.exception()
            if error is not None:
                combined.set_exception(error)
                combined.add_done_callback(_mark_retrieved)
                return
        combined.set_result([f.result() for f in futures])

    if not futures:
        combined.set_result([])
    for future in futures:
        future.add_done_callback(one_done)
    return combined


def then(future: asyncio.Future[T], apply: Callable[[asyncio.Future[T]], R]) -> asyncio.Future[R]:
    """A future for ``apply(future)``, run on the loop when ``future`` finishes, even if
    whoever waits for it is cancelled meanwhile (await it through ``asyncio.shield``)."""
    applied: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    def finish(done: asyncio.Future[T]) -> None:
        try:
            applied.set_result(apply(done))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits ``applied``
            applied.set_exception(exc)
            # If the waiter was cancelled nobody reads it; ``apply`` already dealt with it.
            applied.add_done_callback(_mark_retrieved)

    future.add_done_callback(finish)
    return applied


def close_after(future: asyncio.Future[Any] | None, close: Callable[[], object]) -> None:
    """Run ``close`` now, or once ``future`` (a thread call still using the resource) ends."""
    if future is None or future.done():
        close()
    else:
        def close_when_done(done: asyncio.Future[Any]) -> None:
            _mark_retrieved(done)
            close()

        future.add_done_callback(close_when_done)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
