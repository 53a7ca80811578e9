"""ChangeSignal: wake every task waiting for the next change of something.

Operations (watched by Execute/WaitExecution streams) and log streams (followed by
ByteStream readers) change in plain synchronous methods; each change calls
``notify()``, and a waiter awaits ``changed()`` then re-reads the state. A future per
waiter, not an Event, so no waiter can miss a change that happens between its
wake-up and its next wait.
"""

from __future__ import annotations

import asyncio


class ChangeSignal:
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """A future resolved at the next ``notify``."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter
