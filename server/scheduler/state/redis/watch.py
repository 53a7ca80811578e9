"""A watcher's position in one operation's stage changes, read from Redis.

The execution's stage changes are a Redis list; the watch keeps its index in it, so
fast changes are never merged away, and follows the execution it was opened on
even if the operation's name is deleted meanwhile. ``changed`` resolves at the
execution's next wake-up (wakeups.py); a poke that arrives between a read and the
call to ``changed`` is not lost: ``next`` clears the flag before it reads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from server.scheduler.operation import OperationState
from server.scheduler.state.interface import OperationWatch
from server.scheduler.state.redis.codec import operation_state

if TYPE_CHECKING:
    from server.scheduler.state.redis.state import RedisState


class RedisWatch(OperationWatch):
    __slots__ = ("_state", "name", "execution_id", "_index", "_poked", "_waiter", "_last")

    def __init__(self, state: RedisState, name: str, execution_id: str, index: int) -> None:
        self._state = state
        self.name = name
        self.execution_id = execution_id
        self._index = index
        self._poked = False
        self._waiter: asyncio.Future[None] | None = None
        self._last: OperationState | None = None
        state.wakeups.follow_execution(execution_id, self)

    def poke(self) -> None:
        self._poked = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> OperationState | None:
        self._poked = False
        reply = await self._state.scripts.call("watch_next", self.name, self.execution_id, self._index)
        if reply[0] == b"n":
            return None
        if reply[0] == b"s":
            self._index += 1
        return self._remember(reply[1])

    async def current(self) -> OperationState:
        reply = await self._state.scripts.call("op_states", self.name, self.execution_id)
        return self._remember(reply[0])

    def changed(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._poked:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter

    def _remember(self, reply: list[object] | None) -> OperationState:
        if reply:  # None once retention dropped the execution: what was last seen
            self._last = operation_state(reply)
        assert self._last is not None, f"operation {self.name} vanished before it was first read"
        return self._last
