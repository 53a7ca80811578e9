"""A bot's call in the Redis state with locality: its claim returns its answer
(redis/session_answers.py, call_kept.py), one script fewer, the same answer as the
answer script's; what one call's claim read is never another call's answer, and a
call that holds, or has a cancellation to tell, answers with the answer script."""

from __future__ import annotations

import asyncio

from server.scheduler.state.redis.state import RedisState
from tests.execution.test_redis_placement import STOPPED, action, files_of, open_bot, two_states
from tests.support.fake_clock import FakeClock

__all__ = ["two_states"]  # the fixture, used by name


async def queue_three(state: RedisState, clock: FakeClock) -> None:
    for name in ("x", "held", "z"):
        await state.add_operation(name, action(name), 0, None, clock.now(), 60)


async def bot_holding_one_of_three(state: RedisState, clock: FakeClock) -> tuple[str, list[tuple[object, ...]]]:
    """Three actions queued, a bot holding the files of one, and the answer scripts run from now."""
    await queue_three(state, clock)
    bot = await open_bot(state, clock, "bot", files_of("held"))
    return bot, scripts_seen(state, "answer")


def scripts_seen(state: RedisState, script: str) -> list[tuple[object, ...]]:
    """The calls of ``script`` the state itself makes from now (answer, hold...)."""
    original = state._call
    seen: list[tuple[object, ...]] = []

    async def call(name: str, *args: object) -> object:
        if name == script:
            seen.append(args)
        return await original(name, *args)

    state._call = call  # type: ignore[method-assign]
    return seen


async def test_a_call_that_claims_and_does_not_hold_answers_with_what_its_claim_returned(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, _, clock = two_states
    bot, answers = await bot_holding_one_of_three(a, clock)
    view = await a.claim(bot, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    answer = await a.answer(bot, clock.now() + 60)
    assert answers == []  # its claim's (claim_chosen's) reply
    assert answer is not None and [lease.lease_id for lease in answer.leases] == list(view.lease_ids)
    [lease] = answer.leases
    assert lease.action_digest_proto.hash == action("held").action_digest.hash and not lease.cancelled
    again = await a.answer(bot, clock.now() + 60)  # taken once: the next answer reads its own
    assert len(answers) == 1 and again is not None and [x.lease_id for x in again.leases] == list(view.lease_ids)


async def test_a_call_that_holds_after_its_claim_answers_with_what_is_there_after_the_wait(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, _, clock = two_states
    bot, answers = await bot_holding_one_of_three(a, clock)
    await a.claim(bot, clock.now())
    waiter = await a.hold(bot)
    await a.release_hold(bot, waiter)
    answer = await a.answer(bot, clock.now() + 60)
    assert len(answers) == 1 and answer is not None and len(answer.leases) == 1


async def test_a_cancellation_not_told_yet_is_told_by_the_answer_script(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, b, clock = two_states
    await queue_three(a, clock)
    bot = await open_bot(a, clock, "bot", files_of("held"))
    first = await a.claim(bot, clock.now())
    assert first is not None and len(first.lease_ids) == 1
    await b.cancel_operation("held", STOPPED, STOPPED, clock.now())
    answers = scripts_seen(a, "answer")
    view = await a.claim(bot, clock.now())
    assert view is not None and view.untold_cancellations
    answer = await a.answer(bot, clock.now() + 60)
    assert len(answers) == 1 and answer is not None
    assert [lease.cancelled for lease in answer.leases if lease.lease_id == first.lease_ids[0]] == [True]


async def test_an_answer_kept_by_another_calls_claim_is_not_this_calls(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, _, clock = two_states
    bot, answers = await bot_holding_one_of_three(a, clock)
    view = await asyncio.create_task(a.claim(bot, clock.now()))
    answer = await a.answer(bot, clock.now() + 60)
    assert len(answers) == 1  # its own, from the script
    assert view is not None and answer is not None and [x.lease_id for x in answer.leases] == list(view.lease_ids)
