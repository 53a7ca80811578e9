"""Waiting in tests for something that must happen: one rule for every test.

A wait is bounded by the clock (``PATIENCE_S``, far above what a loaded machine
needs), never by a count of polls or a few seconds: the bound only stops a hang, so
a slow machine never fails a test that would pass on a quick one. Never a timed
assertion either: how long it took is not checked.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.support.processes import PATIENCE_S

T = TypeVar("T")


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, interval: float = 0.005) -> None:
    """Poll ``condition()`` (plain or async: the state may live in another process)
    until it holds; AssertionError naming ``what`` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"never happened in {PATIENCE_S:g}s: {what}")
        await asyncio.sleep(interval)


async def eventually(call: Callable[[], Awaitable[T]], *failures: type[BaseException],
                     interval: float = 0.2) -> T:
    """``call()``'s value once it stops raising one of ``failures`` (AssertionError if
    none are named): a restarted process reconnected, a re-read file taken. Past the
    patience, the last failure is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while True:
        try:
            return await call()
        except failures or (AssertionError,):
            if loop.time() > deadline:
                raise
        await asyncio.sleep(interval)
