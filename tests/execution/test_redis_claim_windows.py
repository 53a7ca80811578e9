"""A bot's call in the Redis state with locality reads its claim's window in its
report (report.lua, redis/claim_windows.py): one script fewer per call, the same
choice as a claim that reads its own window; a window read by one call is never
another call's."""

from __future__ import annotations

import asyncio

from server.scheduler.operation import Stage
from server.scheduler.state.redis.state import RedisState
from tests.execution.test_redis_placement import action, before_script, execution_of, files_of, open_bot, two_states
from tests.support.fake_clock import FakeClock

__all__ = ["two_states"]  # the fixture, used by name


async def queue_three(state: RedisState, clock: FakeClock) -> None:
    for name in ("x", "held", "z"):
        await state.add_operation(name, action(name), 0, None, clock.now(), 60)


async def test_a_claim_after_its_report_takes_what_it_holds_without_a_window_script(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, _, clock = two_states
    await queue_three(a, clock)
    bot = await open_bot(a, clock, "bot", files_of("held"))
    windows = before_script(a, "claim_window", lambda args: asyncio.sleep(0))
    outcome = await a.report(bot, bot, True, [], {}, None, claim_next=True)
    assert outcome is not None
    view = await a.claim(bot, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    assert windows == []  # the report read it
    assert (await a.operation("held")).stage is Stage.EXECUTING  # type: ignore[union-attr]
    assert (await a.operation("x")).stage is Stage.QUEUED  # type: ignore[union-attr]
    assert a.placement is not None and len(a.placement.windows) == 0  # taken once


async def test_a_claim_after_a_report_that_does_not_claim_next_reads_its_own_window(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, _, clock = two_states
    await queue_three(a, clock)
    bot = await open_bot(a, clock, "bot", files_of("held"))
    windows = before_script(a, "claim_window", lambda args: asyncio.sleep(0))
    await a.report(bot, bot, True, [], {}, None)
    view = await a.claim(bot, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    assert len(windows) == 1
    assert (await a.operation("held")).stage is Stage.EXECUTING  # type: ignore[union-attr]


async def test_a_window_read_by_another_call_is_not_this_calls(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    """Another call's report (another task) read a window; this claim reads its own,
    and that call's window stays for it."""
    a, _, clock = two_states
    await queue_three(a, clock)
    bot = await open_bot(a, clock, "bot", files_of("held"))
    windows = before_script(a, "claim_window", lambda args: asyncio.sleep(0))
    await asyncio.create_task(a.report(bot, bot, True, [], {}, None, claim_next=True))
    view = await a.claim(bot, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    assert len(windows) == 1  # its own
    assert a.placement is not None and len(a.placement.windows) == 1
    assert (await a.operation("held")).stage is Stage.EXECUTING  # type: ignore[union-attr]
    assert await execution_of(a, "x")
