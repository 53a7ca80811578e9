"""Locality's bounded wait (``[execution] locality_wait``) over real gRPC: an action a busy
bot holds much more of waits for that bot instead of going to a bot that holds little of
it, but only for the wait: then the other bot gets it, so no action starves behind
better-placed ones, and an urgent one still goes before everything queued."""

from __future__ import annotations

import asyncio


import pytest

from tests.execution.locality_helpers import memory_state_only  # noqa: F401 - scheduler_state: the memory state only
from tests.execution.locality_helpers import (
    GUARD, busy_holder, holding, idle_bot_gets_it, inputs_of, lower_priority_not_taken_while_better_waits,
    passes_bounded, queue, urgent_overtakes, waiting, with_inputs,
)

LONG = 300.0  # a wait no test outlasts: what happens while the action waits
SHORT = 0.2  # a wait every test outlasts: what happens when it is over



async def test_a_new_action_waits_for_the_busy_bot_holding_it_not_the_idle_one(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        action = await with_inputs(env, "lib")
        holder, chore, chore_call = await busy_holder(env, inputs_of(action))
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [action])  # queued, though a bot waits
        assert not idle_poll.done()
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)  # reports, asks for work: gets what it holds
        assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
        assert not idle_poll.done()
        for call in [*calls, chore_call, idle_poll]:
            call.cancel()


async def test_when_the_wait_is_over_the_idle_bot_gets_it(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality", locality_wait=SHORT) as env:
        action = await with_inputs(env, "lib")
        _, _, chore_call = await busy_holder(env, inputs_of(action))  # and it never asks again
        await idle_bot_gets_it(env, action, chore_call)


async def test_a_bot_asking_for_work_leaves_a_queued_action_to_its_busy_holder_for_the_wait_only(make_env) -> None:  # type: ignore[no-untyped-def]
    for wait in (LONG, SHORT):
        async with make_env(dispatch="locality", locality_wait=wait) as env:
            action = await with_inputs(env, "lib")
            holder, chore, chore_call = await busy_holder(env, inputs_of(action))
            calls = await queue(env, [action])  # no other bot: queued
            asker = env.bot(summary_size=8192, cache=holding())
            assert await asker.create() == []  # it holds nothing of it; the holder does
            if wait == LONG:
                holder.complete(chore.id)
                got = await holder.poll(timeout=GUARD)
            else:  # nobody asks: the asker's held call gets it when the wait is over
                got = await asker.poll(timeout=GUARD)
            assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
            for call in [*calls, chore_call]:
                call.cancel()


async def test_a_better_priority_action_waiting_for_its_holder_is_still_overtaken_by_nothing(make_env) -> None:  # type: ignore[no-untyped-def]
    """A deep queue of a lower priority the asking bot holds, and an action of the
    default priority a busy bot holds: the asker takes no lower-priority action while the
    better one waits, and that one runs next, on its holder. (An urgent one, better than
    the default, would not wait: test_an_urgent_action_goes_to_the_idle_bot_whatever_the_wait.)"""
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        await lower_priority_not_taken_while_better_waits(env)


async def test_an_urgent_action_goes_to_the_idle_bot_whatever_the_wait(make_env) -> None:  # type: ignore[no-untyped-def]
    """An urgent action (locality.urgent) its busy holder holds waits for no one: the
    idle bot gets it at once, though the wait is long."""
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        action = await with_inputs(env, "lib")
        _, _, chore_call = await busy_holder(env, inputs_of(action))
        await idle_bot_gets_it(env, action, chore_call, priority=-1)


async def test_an_action_just_given_to_a_bot_counts_as_held_there_before_its_summary_says_so(make_env) -> None:  # type: ignore[no-untyped-def]
    """The bot fetches what it was given: a second action on the same inputs waits for it,
    though the summary it last sent holds nothing."""
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        first = await with_inputs(env, "lib")
        again = await with_inputs(env, "lib", tool="ld")
        fetching = env.bot(summary_size=8192, cache=holding())
        [poll] = await waiting(env, fetching)
        first_call = env.start(first)
        await asyncio.wait_for(poll, GUARD)
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [again])
        assert not idle_poll.done()
        for call in [*calls, first_call, idle_poll]:
            call.cancel()


@pytest.mark.parametrize("wait", [30.0])  # with no wait: test_locality.py, both states
async def test_an_urgent_action_still_overtakes_the_queue_whoever_holds_what(make_env, wait: float) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality", locality_wait=wait) as env:
        await urgent_overtakes(env)


@pytest.mark.parametrize("wait", [30.0])  # with no wait: test_locality.py, both states
async def test_no_action_waits_more_than_max_passes_behind_better_placed_ones(make_env, wait: float) -> None:  # type: ignore[no-untyped-def]
    """As in test_locality.py: a wait changes nothing when no other bot holds it."""
    async with make_env(dispatch="locality", locality_wait=wait) as env:
        await passes_bounded(env)
