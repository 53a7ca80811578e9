"""Locality's placement tiers over real gRPC: a bot leaves an action another bot holds
materially more of (``THEIRS``) to that bot while it has one that is its own
(``MINE``: nobody holds it better), and waits for a holder only when the wait can save
much: never for an action cheap to fetch anywhere, nor for a holder of a small share."""

from __future__ import annotations

import asyncio

import pytest

from server.scheduler.locality import LOCALITY, MINE, THEIRS, choose_placed, tier
from tests.execution.conftest import ExecEnv
from tests.execution.locality_helpers import BIG, GUARD, busy_holder, holding, inputs_of, queue, waiting, with_inputs
from tests.support.actions import BuiltAction

LONG = 300.0  # a wait no test outlasts
# The bounded wait is the memory state's only (config.py refuses it with the Redis
# state); the tests without one run against both states.
memory_state_only = pytest.mark.parametrize("scheduler_state", ["memory"], indirect=True)



async def test_a_bot_asking_for_work_takes_what_nobody_holds_before_what_another_holds(make_env) -> None:  # type: ignore[no-untyped-def]
    """No wait: the oldest queued action is another bot's (it holds all of it), the next
    nobody's; the asker, holding neither, takes the second and leaves the first."""
    async with make_env(dispatch="locality") as env:
        theirs = await with_inputs(env, "theirs")
        nobodys = await with_inputs(env, "nobodys")
        _, _, chore_call = await busy_holder(env, inputs_of(theirs))
        calls = await queue(env, [theirs, nobodys])
        asker = env.bot(summary_size=8192, cache=holding())
        [lease] = await asker.create()
        assert lease.action_digest == nobodys.digest.to_proto()
        for call in [*calls, chore_call]:
            call.cancel()


@memory_state_only
async def test_an_action_cheap_to_fetch_never_waits_for_its_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """Inputs under ``min_home`` bytes: the idle bot gets it at once, though a busy bot
    holds all of it and the wait is long."""
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        await _cheap_goes_to_the_idle_bot(env)


async def test_an_action_cheap_to_fetch_never_waits_for_its_holders_progress(make_env) -> None:  # type: ignore[no-untyped-def]
    """The same with the wait for the holder (no ``locality_wait``), in both states."""
    async with make_env(dispatch="locality") as env:
        await _cheap_goes_to_the_idle_bot(env)


async def _cheap_goes_to_the_idle_bot(env: ExecEnv) -> None:
    small = await with_inputs(env, "small", size=LOCALITY.min_home // 8)
    _, _, chore_call = await busy_holder(env, inputs_of(small))
    [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
    call = env.start(small)
    got = await asyncio.wait_for(idle_poll, GUARD)
    assert [lease.action_digest for lease in got] == [small.digest.to_proto()]
    for pending in (call, chore_call):
        pending.cancel()


@memory_state_only
async def test_a_busy_bot_holding_a_small_share_of_an_action_is_not_waited_for(make_env) -> None:  # type: ignore[no-untyped-def]
    """The busy bot holds one of five big input files (a fifth, under ``material``'s
    quarter): the idle bot, holding none, takes it at once; holding all five, the
    busy bot would be waited for."""
    async with make_env(dispatch="locality", locality_wait=LONG) as env:
        await _small_share_goes_to_the_idle_bot(env)


async def test_a_busy_bot_holding_a_small_share_of_an_action_is_not_waited_for_as_its_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """The same with the wait for the holder (no ``locality_wait``), in both states."""
    async with make_env(dispatch="locality") as env:
        await _small_share_goes_to_the_idle_bot(env)


async def _small_share_goes_to_the_idle_bot(env: ExecEnv) -> None:
    spread = await _five_files(env, "spread")
    whole = await _five_files(env, "whole")
    _, _, chore_call = await busy_holder(env, inputs_of(spread)[:1] + inputs_of(whole))
    [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
    calls = await queue(env, [whole])  # all of it held by the busy bot: it waits
    assert not idle_poll.done()
    calls.append(env.start(spread))
    got = await asyncio.wait_for(idle_poll, GUARD)
    assert [lease.action_digest for lease in got] == [spread.digest.to_proto()]
    for pending in (*calls, chore_call):
        pending.cancel()


async def _five_files(env: ExecEnv, name: str) -> BuiltAction:
    files = {f"{name}/{i}.h": bytes([i]) * BIG + name.encode() for i in range(5)}
    return await env.actions.build(["cc", name], inputs=files)


def test_tiers_weigh_what_another_bot_holds_against_what_a_wait_can_save() -> None:
    big, gain = 400_000, LOCALITY.min_gain
    assert tier(LOCALITY, big, 0, big) == THEIRS  # all of it elsewhere
    assert tier(LOCALITY, big, big, big) == MINE  # held here as much as there
    assert tier(LOCALITY, big, 0, 0) == MINE  # nobody's: the first bot given it owns it
    assert tier(LOCALITY, big, 0, big // 5) == MINE  # a fifth elsewhere is not material
    assert tier(LOCALITY, big, big // 2, big) == THEIRS  # half more elsewhere is
    assert tier(LOCALITY, big, big - gain + 1, big) == MINE  # it lacks little here
    assert tier(LOCALITY, LOCALITY.min_home - 1, 0, LOCALITY.min_home - 1) == MINE  # cheap anywhere


def test_a_bot_takes_its_own_before_theirs_and_waits_only_while_it_may_not_take_theirs() -> None:
    held, passes = [0, 0, 50_000], [0, 0, 0]
    assert choose_placed(LOCALITY, held, passes, [THEIRS, MINE, MINE]) == 2  # its best of its own
    assert choose_placed(LOCALITY, held, passes, [THEIRS, MINE, THEIRS]) == 1
    assert choose_placed(LOCALITY, held, passes, [THEIRS, THEIRS, THEIRS]) == 2  # no wait: work goes on
    theirs = [THEIRS, THEIRS, THEIRS]
    assert choose_placed(LOCALITY, held, passes, theirs, [False, False, False]) is None  # all still wait
    assert choose_placed(LOCALITY, held, passes, theirs, [False, True, False]) == 1  # one's wait is over
    starved = [LOCALITY.max_passes, 0, 0]
    assert choose_placed(LOCALITY, held, starved, [THEIRS, MINE, MINE], [False, True, True]) == 0  # fairness first
