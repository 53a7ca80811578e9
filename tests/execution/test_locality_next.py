"""Locality's ``NEXT`` tier over real gRPC, both scheduler states: of the actions busy
bots hold, an idle bot takes one that only one busy bot holds before one that a
second busy bot holds too, so two idle bots share out one busy bot's work instead of
each fetching what the other already fetched (docs/BENCHMARKS.md, "Where the bytes
go")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc

from cas.digest import Digest
from server.scheduler.locality import LOCALITY, MINE, NEXT, THEIRS, tiers_among
from tests.execution.conftest import ExecEnv
from tests.execution.locality_helpers import GUARD, holding, inputs_of, queue, waiting, with_inputs
from tests.support.test_bot import TestBot


async def _busy(env: ExecEnv, name: str, held: Iterable[Digest]) -> tuple[TestBot, grpc.aio.UnaryStreamCall]:
    """A one-slot bot holding ``held``, its slot taken by an action of its own (``name``'s)."""
    chore = await with_inputs(env, f"chore-{name}")
    bot = env.bot(summary_size=8192, cache=holding(held))
    [poll] = await waiting(env, bot)
    call = env.start(chore)
    await asyncio.wait_for(poll, GUARD)
    return bot, call


async def test_an_idle_bot_takes_what_one_busy_bot_holds_before_what_two_hold(make_env) -> None:  # type: ignore[no-untyped-def]
    """The oldest queued action is held by two busy bots, the next by one of them only
    (no wait for holders): the idle bot, holding neither, takes the second; the first
    it would fetch a third time."""
    async with make_env(dispatch="locality", locality_wait_for_holder=False) as env:
        shared = await with_inputs(env, "shared")
        single = await with_inputs(env, "single")
        _, first_call = await _busy(env, "a", inputs_of(shared) + inputs_of(single))
        _, second_call = await _busy(env, "b", inputs_of(shared))
        calls = await queue(env, [shared, single])
        asker = env.bot(summary_size=8192, cache=holding())
        [lease] = await asker.create()
        assert lease.action_digest == single.digest.to_proto()
        for call in [*calls, first_call, second_call]:
            call.cancel()


async def test_with_one_busy_holder_the_oldest_still_goes_first(make_env) -> None:  # type: ignore[no-untyped-def]
    """Each queued action is held by one busy bot (both ``NEXT`` to the idle bot): the
    oldest first, as before the tier."""
    async with make_env(dispatch="locality", locality_wait_for_holder=False) as env:
        older = await with_inputs(env, "older")
        newer = await with_inputs(env, "newer")
        _, first_call = await _busy(env, "a", inputs_of(older))
        _, second_call = await _busy(env, "b", inputs_of(newer))
        calls = await queue(env, [older, newer])
        asker = env.bot(summary_size=8192, cache=holding())
        [lease] = await asker.create()
        assert lease.action_digest == older.digest.to_proto()
        for call in [*calls, first_call, second_call]:
            call.cancel()


def test_next_is_theirs_to_a_bot_no_third_bot_beats() -> None:
    big = 400_000
    assert tiers_among(LOCALITY, big, [0], [big, 0, 0]) == [NEXT]  # one holder: the others are next
    assert tiers_among(LOCALITY, big, [0], [big, big, 0]) == [THEIRS]  # two hold it: a third is not
    assert tiers_among(LOCALITY, big, [big, 0], [big, big, 0]) == [MINE, THEIRS]  # the takers counted once
    assert tiers_among(LOCALITY, big, [big - big // 8], [big, big - big // 8, 0]) == [MINE]  # an eighth is not material
    assert tiers_among(LOCALITY, big, [0], [0, 0, 0]) == [MINE]  # nobody's
    assert tiers_among(LOCALITY, big, [0], [big]) == [NEXT]  # the taker alone with its holder
    assert tiers_among(LOCALITY, LOCALITY.min_home - 1, [0], [LOCALITY.min_home - 1] * 3) == [MINE]  # cheap anywhere
