"""Locality dispatch over real gRPC: actions go to the bot holding their inputs, then to
the least loaded; a bot asking for work takes the queued action it holds most of;
priorities are never crossed, and no action waits more than ``max_passes`` dispatches
behind better-placed ones. ``"fifo"`` does none of it. Each test runs against both
scheduler states (the bounded wait's variants, memory only: test_locality_wait.py)."""

from __future__ import annotations

import asyncio

import pytest

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from server.scheduler.locality import SAMPLE, held_bytes, held_bytes_each, record_keys, sketch_of
from tests.execution.conftest import ExecEnv
from tests.execution.locality_helpers import (
    GUARD, holding, inputs_of, passes_bounded, queue, urgent_overtakes, waiting, with_inputs,
)
from tests.support.test_bot import TestBot
from tests.support.waiting import until

@pytest.mark.parametrize("dispatch", ["locality", "fifo"])
async def test_a_new_action_goes_to_the_waiting_bot_that_holds_its_inputs(make_env, dispatch: str) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch=dispatch) as env:
        action = await with_inputs(env, "lib")
        first = env.bot(summary_size=8192, cache=holding())
        holder = env.bot(summary_size=8192, cache=holding(inputs_of(action)))
        polls = await waiting(env, first, holder)
        call = env.start(action)
        done, _ = await asyncio.wait(polls, timeout=GUARD, return_when=asyncio.FIRST_COMPLETED)
        [got] = [bot for bot, poll in zip((first, holder), polls) if poll in done and poll.result()]
        assert got is (holder if dispatch == "locality" else first)
        call.cancel()
        for poll in polls:
            poll.cancel()


@pytest.mark.parametrize("dispatch", ["locality", "fifo"])
async def test_a_bot_on_its_way_back_from_a_report_gets_the_action_it_holds(make_env, dispatch: str) -> None:  # type: ignore[no-untyped-def]
    """The holder just reported on a quick call (not held): for a moment it counts as
    waiting, so the action whose inputs it holds does not go to the idle bot."""
    async with make_env(dispatch=dispatch) as env:
        action = await with_inputs(env, "lib")
        idle = env.bot(summary_size=8192, cache=holding())
        holder = env.bot(summary_size=8192, cache=holding(inputs_of(action)), hold_when_busy=True)
        [poll] = await waiting(env, idle)
        await holder.create()
        assert await holder.quick_poll() == []  # a quick call, answered at once
        call = env.start(action)
        await until(lambda: _queued_or_leased(env, holder, idle), "the action was placed")
        got = await holder.quick_poll()
        if dispatch == "locality":
            assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
            assert not poll.done()
        else:
            assert got == [] and [le.action_digest for le in await asyncio.wait_for(poll, GUARD)] == [
                action.digest.to_proto()]
        call.cancel()
        poll.cancel()


async def _queued_or_leased(env: ExecEnv, *bots: TestBot) -> bool:
    """Whether the action is queued or leased to one of ``bots`` (asked of the state:
    the Redis state's farm() is a snapshot of the last tick)."""
    for bot in bots:
        session = await env.scheduler.state.session(bot.name)
        if session is not None and session.lease_ids:
            return True
    return await env.queued() > 0


@pytest.mark.parametrize("dispatch", ["locality", "fifo"])
async def test_among_bots_holding_as_much_the_least_loaded_gets_it(make_env, dispatch: str) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch=dispatch) as env:
        action = await with_inputs(env, "lib")
        busy = env.bot(summary_size=8192, cache=holding(), load="cpu=0.90 memory=0.20")
        calm = env.bot(summary_size=8192, cache=holding(), load="cpu=0.05 memory=0.20")
        polls = await waiting(env, busy, calm)
        call = env.start(action)
        done, _ = await asyncio.wait(polls, timeout=GUARD, return_when=asyncio.FIRST_COMPLETED)
        [got] = [bot for bot, poll in zip((busy, calm), polls) if poll in done and poll.result()]
        assert got is (calm if dispatch == "locality" else busy)
        call.cancel()
        for poll in polls:
            poll.cancel()


@pytest.mark.parametrize("dispatch", ["locality", "fifo"])
async def test_a_bot_asking_for_work_takes_the_queued_action_it_holds(make_env, dispatch: str) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch=dispatch) as env:
        actions = [await with_inputs(env, name) for name in ("a", "b", "c")]
        calls = await queue(env, actions)
        bot = env.bot(summary_size=8192, cache=holding(inputs_of(actions[2])))
        [lease] = await bot.create()
        expected = actions[2] if dispatch == "locality" else actions[0]
        assert lease.action_digest == expected.digest.to_proto()
        for call in calls:
            call.cancel()


@pytest.mark.parametrize("wait", [0.0])  # 30.0: test_locality_wait.py (memory state only)
async def test_an_urgent_action_still_overtakes_the_queue_whoever_holds_what(make_env, wait: float) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality", locality_wait=wait) as env:
        await urgent_overtakes(env)


@pytest.mark.parametrize("wait", [0.0])  # 30.0: test_locality_wait.py (memory state only)
async def test_no_action_waits_more_than_max_passes_behind_better_placed_ones(make_env, wait: float) -> None:  # type: ignore[no-untyped-def]
    """The oldest queued action, which the bot holds nothing of, behind a stream of
    actions it holds: the bot passes it over at most ``max_passes`` times (a wait
    changes nothing: no other bot holds it)."""
    async with make_env(dispatch="locality", locality_wait=wait) as env:
        await passes_bounded(env)


async def test_the_server_agrees_to_summaries_only_when_its_dispatch_uses_them(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality") as env:
        offering = env.bot(summary_size=1 << 20, cache=holding())
        await offering.create()
        assert offering.summary_agreed == 32 << 10  # capped by the server
        silent = env.bot()
        await silent.create()
        assert silent.summary_agreed is None  # BuildGrid's bots are told nothing new
        garbage = env.bot(summary_size=8192, cache=b"\x09junk", load="cpu=lots")
        await garbage.create()  # ignored, never an error: it only steers placement
        assert garbage.summary_agreed == 8192
    async with make_env(dispatch="fifo") as env:
        offering = env.bot(summary_size=8192, cache=holding())
        await offering.create()
        assert offering.summary_agreed == 0


def test_held_bytes_estimates_the_share_of_inputs_a_filter_holds() -> None:
    files = [Digest.of(bytes([i]) * (1000 + i)) for i in range(2 * SAMPLE)]
    total = sum(d.size_bytes for d in files)
    sketch = sketch_of(files, total)
    assert held_bytes(sketch, holding()) == 0
    assert held_bytes(sketch, holding(files)) == total
    largest = sorted(files, key=lambda d: d.size_bytes, reverse=True)[:SAMPLE]
    half = held_bytes(sketch, holding(largest[::2]))
    assert 0.4 * total < half < 0.6 * total
    assert held_bytes(b"", holding(files)) == 0 and held_bytes(sketch, None) == 0


def test_held_bytes_each_gives_held_bytes_figures_for_every_bot() -> None:
    """The claim's batch estimate (probe positions shared by filters of one size) is
    held_bytes itself, bot by bot: filters of several sizes and probe counts, partly
    holding, expected keys, no filter, no sketch."""
    files = [Digest.of(bytes([i]) * (500 + 37 * i)) for i in range(2 * SAMPLE)]
    sketch = sketch_of(files, 10 * sum(d.size_bytes for d in files))
    filters: list[bytes | None] = [None, b""]
    for bits, probes in ((8192, 5), (65536, 7), (512, 3), (8192, 2)):
        for held in (files[::2], files[::3], files, [], files[5:9]):
            summary = DigestFilter(bits, probes)
            summary.add_all(d.hash for d in held)
            filters.append(summary.to_bytes())
    keys = list(record_keys(sketch))
    for expected in (frozenset(), frozenset(keys[1::4]), frozenset(keys)):
        each = held_bytes_each(sketch, filters, [expected] * len(filters))
        assert each == [held_bytes(sketch, summary, expected) for summary in filters]
        assert len(set(each)) > 2 or expected
    assert held_bytes_each(b"", filters, [frozenset(keys)] * len(filters)) == [0] * len(filters)


async def test_an_action_given_to_a_bot_counts_as_held_there_before_its_summary_says_so(make_env) -> None:  # type: ignore[no-untyped-def]
    """The bot fetches what it was given: the next action on the same inputs goes to it,
    though another bot waited longer, is less loaded, and holds as little by its summary."""
    async with make_env(dispatch="locality") as env:
        first = await with_inputs(env, "lib")
        again = await with_inputs(env, "lib", tool="ld")
        fetching = env.bot(summary_size=8192, cache=holding(), capacity=2, hold_when_busy=True)
        [poll] = await waiting(env, fetching)
        first_call = env.start(first)
        [lease] = await asyncio.wait_for(poll, GUARD)
        assert lease.action_digest == first.digest.to_proto()
        [other_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        poll = asyncio.create_task(fetching.poll())  # waits again, its first lease running
        await until(lambda: env.holds(fetching), "the fetching bot waits for more")
        again_call = env.start(again)
        [got] = await asyncio.wait_for(poll, GUARD)
        assert got.action_digest == again.digest.to_proto()
        assert not other_poll.done()
        for call in (first_call, again_call, other_poll):
            call.cancel()
