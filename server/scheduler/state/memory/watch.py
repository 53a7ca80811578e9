"""A watcher's position in one operation's stage changes, in memory.

The execution keeps every stage change in a list; the watch replays from its index,
so fast changes are never merged away, and holds the operation itself, so a
deleted name does not end a stream already following it.
"""

from __future__ import annotations

import asyncio

from server.scheduler.operation import OperationState
from server.scheduler.state.interface import OperationWatch
from server.scheduler.state.memory.records import Operation, state_of


class MemoryWatch(OperationWatch):
    __slots__ = ("_operation", "_index")

    def __init__(self, operation: Operation, replay: bool) -> None:
        self._operation = operation
        self._index = operation.first_event if replay else len(operation.execution.history) - 1

    async def next(self) -> OperationState | None:
        operation = self._operation
        if operation.cancelled_response is not None:
            return state_of(operation)
        history = operation.execution.history
        if self._index >= len(history):
            return None
        event = history[self._index]
        self._index += 1
        return state_of(operation, event)

    async def current(self) -> OperationState:
        return state_of(self._operation)

    def changed(self) -> asyncio.Future[None]:
        return self._operation.execution.changed()

