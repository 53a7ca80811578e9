"""What the locality tests share: bots holding an action's inputs, actions queued in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from server.scheduler.state.interface import StateFactory
from server.scheduler.state.memory.state import memory_state
from tests.execution.conftest import ExecEnv
from tests.support.actions import BuiltAction
from tests.support.test_bot import TestBot

@pytest.fixture(name="scheduler_state")
def memory_state_only() -> StateFactory:
    """Locality dispatch is the memory state's only: the Redis state keeps no cache
    summaries, and a config asking for both is refused (server/scheduler/config.py)."""
    return memory_state


GUARD = 20.0
BIG = 64 << 10  # input files big enough that holding them beats min_gain


def holding(digests: Iterable[Digest] = ()) -> bytes:
    """A cache summary that holds ``digests``."""
    summary = DigestFilter(8192, 5)
    summary.add_all(d.hash for d in digests)
    return summary.to_bytes()


async def until(condition: Any, what: str) -> None:
    for _ in range(2000):
        if await condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def with_inputs(env: ExecEnv, name: str, size: int = BIG, tool: str = "cc") -> BuiltAction:
    """An action running ``tool`` on three big input files named after ``name`` (the same name, the same files)."""
    files = {f"{name}/{i}.h": bytes([i]) * size + name.encode() for i in range(3)}
    return await env.actions.build([tool, name], inputs=files)


def inputs_of(action: BuiltAction) -> list[Digest]:
    return [d for key, d in action.blobs.items() if key.startswith("file:")]


async def waiting(env: ExecEnv, *bots: TestBot) -> list[asyncio.Task[Any]]:
    """Each bot in a held call, in this order (the first waits longest)."""
    # The scheduler orders the bots waiting for a requirement set from when it knows the set.
    await env.scheduler.state.unserved_since(env.scheduler.matcher.requirements([]))
    polls = []
    for bot in bots:
        await bot.create()
        polls.append(asyncio.create_task(bot.poll()))
        await until(lambda: env.holds(bot), f"{bot.bot_id} waits for work")
    return polls


async def queue(env: ExecEnv, actions: list[BuiltAction], priority: int = 0) -> list[Any]:
    """Execute each, in this order, and wait until it is queued."""
    calls = []
    before = await env.queued()
    for action in actions:
        calls.append(env.start(action, execution_policy={"priority": priority}))
        await until(lambda n=before + len(calls): _queued_at_least(env, n), "queued")
    return calls


async def _queued_at_least(env: ExecEnv, count: int) -> bool:
    return await env.queued() >= count
