"""Priority and fairness under locality dispatch over real gRPC, both scheduler states
(issue 13, acceptance 4): an urgent action (a priority better than the default,
locality.urgent) is placed as fifo places it, whoever holds its inputs, and an action
that waits for its busy holder is passed over ``max_passes`` times at most."""

from __future__ import annotations

from server.scheduler.locality import LOCALITY
from tests.execution.locality_helpers import (
    GUARD, busy_holder, holding, idle_bot_gets_it, inputs_of, queue, taken_within_max_passes, with_inputs,
)
from tests.execution.conftest import ExecEnv
from tests.support.waiting import until

URGENT = -1  # any priority better than the default (0) is urgent


async def test_an_urgent_action_its_busy_holder_holds_goes_to_the_idle_bot_at_once(make_env) -> None:  # type: ignore[no-untyped-def]
    """Not queued to wait for the holder (a non-urgent one would: test_locality_holder.py)."""
    async with make_env(dispatch="locality") as env:
        action = await with_inputs(env, "lib")
        _, _, chore_call = await busy_holder(env, inputs_of(action))
        await idle_bot_gets_it(env, action, chore_call, priority=URGENT)


async def test_a_bot_asking_for_work_takes_the_oldest_urgent_action_whoever_holds_it(make_env) -> None:  # type: ignore[no-untyped-def]
    """Two urgent actions queued: the older one its busy holder holds, the newer one the
    asker holds, and a queue of default-priority actions the asker holds. The asker
    takes the older urgent one first, then the newer: fifo's order, no wait."""
    async with make_env(dispatch="locality") as env:
        theirs = await with_inputs(env, "theirs")
        mine = await with_inputs(env, "mine")
        deep = [await with_inputs(env, f"deep{i}") for i in range(4)]
        _, _, chore_call = await busy_holder(env, inputs_of(theirs))
        calls = await queue(env, deep)
        calls += await queue(env, [theirs, mine], priority=URGENT)
        asker = env.bot(summary_size=8192, cache=holding([*inputs_of(mine), *(d for a in deep for d in inputs_of(a))]))
        got = await asker.create()
        assert [lease.action_digest for lease in got] == [theirs.digest.to_proto()]
        asker.complete(got[0].id)
        got = await asker.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [mine.digest.to_proto()]
        for call in [*calls, chore_call]:
            call.cancel()


async def test_an_action_waiting_for_its_holder_is_passed_over_max_passes_times_at_most(make_env) -> None:  # type: ignore[no-untyped-def]
    """The bounded wait of fairness, whatever the holder does: an action waits for its busy
    holder (which never asks again; its cap is far off) while a bot holding nothing of it
    takes the later ones, one per call. After at most ``max_passes`` of them it takes the
    waiting one (the Redis state's window passes a waiting action by: that counts too)."""
    async with make_env(dispatch="locality", locality_holder_wait_max=600.0) as env:
        held = await with_inputs(env, "held")
        later = [await with_inputs(env, f"later{i}", size=1024) for i in range(LOCALITY.max_passes + 4)]
        _, _, chore_call = await busy_holder(env, inputs_of(held))
        calls = await queue(env, [held, *later])
        asker = env.bot(summary_size=8192, cache=holding())
        position = await taken_within_max_passes(
            asker, held, "the waiting action was passed over past the fairness bound")
        assert 1 <= position <= LOCALITY.max_passes  # it did wait for its holder, but only so long
        for call in [*calls, chore_call]:
            call.cancel()


async def test_an_urgent_action_queued_behind_a_waiting_one_is_not_held_back(make_env) -> None:  # type: ignore[no-untyped-def]
    """A re-sent Execute raises a queued action that waits for its holder to urgent: the
    next bot that asks takes it at once (its wait no longer holds it)."""
    async with make_env(dispatch="locality", locality_holder_wait_max=600.0) as env:
        action = await with_inputs(env, "lib")
        filler = await with_inputs(env, "filler", size=1024)
        _, _, chore_call = await busy_holder(env, inputs_of(action))
        calls = await queue(env, [action, filler])
        asker = env.bot(summary_size=8192, cache=holding())
        got = await asker.create()  # the action begins to wait for its holder: the asker takes the filler
        assert [lease.action_digest for lease in got] == [filler.digest.to_proto()]
        before = await env.operation_count()
        calls.append(env.start(action, execution_policy={"priority": URGENT}))
        await until(lambda: _operations_at_least(env, before + 1), "the urgent Execute joined the queued action")
        asker.complete(got[0].id)
        got = await asker.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
        for call in [*calls, chore_call]:
            call.cancel()


async def _operations_at_least(env: ExecEnv, count: int) -> bool:
    return await env.operation_count() >= count
