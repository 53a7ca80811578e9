"""Locality's wait for the holder (``[execution] locality_wait_for_holder``, on by default,
no ``locality_wait``) over real gRPC: an action a busy bot holds much more of waits for
that bot, not a number of seconds, but its progress: once the holder has been given as
many other actions as it has slots, it had work ahead of this one, and an idle bot
takes it. This is what keeps a component on one bot when a cold Bazel server sends its
first actions one by one, each finding a bot idle (docs/BENCHMARKS.md)."""

from __future__ import annotations

import asyncio


from server.scheduler.locality import LOCALITY
from tests.execution.locality_helpers import (
    GUARD, busy_holder, holder_taking_what_it_holds_keeps_the_waiting_one, holding, idle_bot_gets_it, inputs_of,
    lower_priority_not_taken_while_better_waits,
    passes_bounded, queue, urgent_overtakes, waiting, with_inputs,
)
from tests.support.waiting import until



async def test_without_a_timed_wait_a_new_action_waits_for_its_busy_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """The idle bot, holding none of it, does not get it; the holder gets it when it asks."""
    async with make_env(dispatch="locality") as env:
        action = await with_inputs(env, "lib")
        holder, chore, chore_call = await busy_holder(env, inputs_of(action))
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [action])  # queued, though a bot waits
        assert not idle_poll.done()
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
        assert not idle_poll.done()
        for call in [*calls, chore_call, idle_poll]:
            call.cancel()


async def test_the_holder_working_through_what_waits_for_it_keeps_it(make_env) -> None:  # type: ignore[no-untyped-def]
    """Two actions wait for the holder; it takes the first: that is its own backlog,
    not other work, so the second still waits for it, not for the idle bot."""
    async with make_env(dispatch="locality") as env:
        first = await with_inputs(env, "first")
        second = await with_inputs(env, "second")
        holder, chore, chore_call = await busy_holder(env, inputs_of(first) + inputs_of(second))
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [first, second])
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [first.digest.to_proto()]
        holder.complete(got[0].id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [second.digest.to_proto()]
        assert not idle_poll.done()
        for call in [*calls, chore_call, idle_poll]:
            call.cancel()


async def test_once_the_holder_moves_on_to_other_work_another_bot_takes_what_waited(make_env) -> None:  # type: ignore[no-untyped-def]
    """An action waits for the holder; the other bot, busy meanwhile, asks again after
    the holder has taken an urgent action nobody held (other work, its one slot):
    the wait is over, and the other bot gets it."""
    async with make_env(dispatch="locality") as env:
        held = await with_inputs(env, "held")
        other = await with_inputs(env, "other")
        urgent = await with_inputs(env, "urgent")
        holder, chore, chore_call = await busy_holder(env, inputs_of(held))
        rival = env.bot(summary_size=8192, cache=holding())
        [rival_poll] = await waiting(env, rival)
        calls = await queue(env, [held])  # it waits for the holder
        calls.append(env.start(other))  # nobody holds it: the waiting rival gets it
        [other_lease] = await asyncio.wait_for(rival_poll, GUARD)
        assert other_lease.action_digest == other.digest.to_proto()
        calls += await queue(env, [urgent], priority=-1000)  # both bots busy: queued
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [urgent.digest.to_proto()]
        rival.complete(other_lease.id)
        got = await rival.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [held.digest.to_proto()]
        for call in [*calls, chore_call]:
            call.cancel()


async def test_a_holder_running_a_long_action_is_waited_for_at_most_holder_wait_max(make_env) -> None:  # type: ignore[no-untyped-def]
    """The holder never asks again: after ``locality_holder_wait_max`` the idle bot gets
    it (the memory state's timer; the Redis state's tick, which any replica runs)."""
    async with make_env(dispatch="locality", locality_holder_wait_max=0.2) as env:
        action = await with_inputs(env, "lib")
        _, _, chore_call = await busy_holder(env, inputs_of(action))
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [action])  # it waits for the holder
        await env.expire(1.0)  # past the cap, then a tick
        got = await asyncio.wait_for(idle_poll, GUARD)
        assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
        for call in [*calls, chore_call]:
            call.cancel()


async def test_turned_off_the_idle_bot_takes_it_at_once(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality", locality_wait_for_holder=False) as env:
        action = await with_inputs(env, "lib")
        _, _, chore_call = await busy_holder(env, inputs_of(action))
        await idle_bot_gets_it(env, action, chore_call)


async def test_priorities_are_never_crossed(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality") as env:
        await urgent_overtakes(env)


async def test_no_action_is_passed_over_more_than_max_passes_times(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(dispatch="locality") as env:
        await passes_bounded(env)


async def test_no_more_than_the_holder_backlog_waits_for_one_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """With ``locality_holder_backlog = 1`` one action waits for the one-slot holder; the
    next the holder holds goes to the idle bot at once (the holder would not reach it soon)."""
    async with make_env(dispatch="locality", locality_holder_backlog=1) as env:
        first = await with_inputs(env, "first")
        second = await with_inputs(env, "second")
        holder, chore, chore_call = await busy_holder(env, inputs_of(first) + inputs_of(second))
        [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
        calls = await queue(env, [first])  # it waits for the holder
        calls.append(env.start(second))
        got = await asyncio.wait_for(idle_poll, GUARD)
        assert [lease.action_digest for lease in got] == [second.digest.to_proto()]
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [first.digest.to_proto()]
        for call in [*calls, chore_call]:
            call.cancel()


async def test_a_bot_takes_no_lower_priority_action_while_a_better_one_waits_for_its_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """An action of the default priority waits for its busy holder over a deep queue of
    a lower priority that the asker holds: the asker takes nothing (priorities are never
    crossed, in the claim's fill either), and the better one runs next, on its holder.
    (An urgent one, better than the default, would not wait: test_locality_priority.py.)"""
    async with make_env(dispatch="locality") as env:
        await lower_priority_not_taken_while_better_waits(env)


async def test_a_big_action_waits_for_more_of_its_holders_progress(make_env) -> None:  # type: ignore[no-untyped-def]
    """Inputs over ``holder_wait_bytes`` (two of its units here): the holder taking one
    other action, which ends a small action's wait (the test above), does not end this
    one's; the idle bot asking then gets nothing, and the holder takes it next."""
    async with make_env(dispatch="locality") as env:
        big = await with_inputs(env, "big", size=LOCALITY.holder_wait_bytes // 2)  # three files: 1.5 units
        other = await with_inputs(env, "other")
        urgent = await with_inputs(env, "urgent")
        holder, chore, chore_call = await busy_holder(env, inputs_of(big))
        rival = env.bot(summary_size=8192, cache=holding())
        [rival_poll] = await waiting(env, rival)
        calls = await queue(env, [big])  # it waits for the holder
        calls.append(env.start(other))  # nobody holds it: the waiting rival gets it
        [other_lease] = await asyncio.wait_for(rival_poll, GUARD)
        calls += await queue(env, [urgent], priority=-1000)
        holder.complete(chore.id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [urgent.digest.to_proto()]  # one slot's worth of other work
        rival.complete(other_lease.id)
        rival_poll = asyncio.create_task(rival.poll(timeout=GUARD))
        await until(lambda: env.holds(rival), "the rival waits for work")
        assert not rival_poll.done()
        assert await env.queued() == 1  # the big one still waits for its holder
        holder.complete(got[0].id)
        got = await holder.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [big.digest.to_proto()]
        for call in [*calls, chore_call, rival_poll]:
            call.cancel()


async def test_the_holder_taking_other_work_it_holds_has_not_moved_on(make_env) -> None:  # type: ignore[no-untyped-def]
    """As the test above where the holder moves on, but the action of a better priority
    it takes first is one it holds too (a burst of one component's compiles; not an
    urgent one, which is placed as fifo places it): that is its own work, not other
    work, so the action waiting for it still waits, and the holder takes it next."""
    async with make_env(dispatch="locality") as env:
        await holder_taking_what_it_holds_keeps_the_waiting_one(env, waiting_priority=10, taken_priority=0)


async def test_in_a_deep_queue_no_action_waits_for_its_holder(make_env) -> None:  # type: ignore[no-untyped-def]
    """A full window of queued actions (``window``), all held by one busy bot: the idle
    bot asking takes the oldest at once (locality.deep_queue). Waits there would only
    idle it: with enough of them at the queue's head a drain ran at 0.04x fifo's rate."""
    async with make_env(dispatch="locality") as env:
        deep = [await with_inputs(env, f"deep{i}") for i in range(LOCALITY.window + 1)]
        _, _, chore_call = await busy_holder(env, [d for a in deep for d in inputs_of(a)])
        calls = await queue(env, deep)
        asker = env.bot(summary_size=8192, cache=holding())
        [lease] = await asker.create()
        assert lease.action_digest == deep[0].digest.to_proto()
        for call in [*calls, chore_call]:
            call.cancel()


async def test_an_urgent_action_the_holder_holds_is_its_own_work_too(make_env) -> None:  # type: ignore[no-untyped-def]
    """As the test above, but the action the holder takes first is urgent: placed as fifo
    places it (the Redis state's claim takes it in its script, without Python's choice),
    yet it is still one the holder holds, so its own work, not progress (locality.own_work,
    whoever gives it): the action waiting for the holder still waits, and the holder
    takes it next. Before, the Redis state counted what a script gave on its own as
    progress, and the rival took the waiting action."""
    async with make_env(dispatch="locality") as env:
        await holder_taking_what_it_holds_keeps_the_waiting_one(env, waiting_priority=0, taken_priority=-1000)


async def test_in_a_deep_queue_a_bot_takes_its_own_work_first_then_what_its_holder_is_busy_with(make_env) -> None:  # type: ignore[no-untyped-def]
    """A build with a ``--jobs`` well above the window plus the free slots: its queue is
    deep (locality.deep_queue), so no wait for a holder begins. What a bot asking takes
    then: of a component a busy bot holds (its compiles at the queue's head) and one the
    asker holds (one compile among them, within the window), first its own, whatever
    its age (the tiers still hold in a deep queue: that keeps locality's saving); once
    the window holds none of its own, the oldest of the busy holder's, at once (the
    deep queue's rule: no wait, one component fetched twice)."""
    async with make_env(dispatch="locality") as env:
        theirs = [await with_inputs(env, "busy", tool=f"cc{i}") for i in range(LOCALITY.window + 1)]
        mine = await with_inputs(env, "asker")
        _, _, chore_call = await busy_holder(env, inputs_of(theirs[0]))
        calls = await queue(env, theirs[:10])
        calls += await queue(env, [mine])
        calls += await queue(env, theirs[10:])
        asker = env.bot(summary_size=8192, cache=holding(inputs_of(mine)))
        [lease] = await asker.create()
        assert lease.action_digest == mine.digest.to_proto()  # its own, the 11th of 18
        asker.complete(lease.id)
        got = await asker.poll(timeout=GUARD)
        assert [lease.action_digest for lease in got] == [theirs[0].digest.to_proto()]  # none of its own: the oldest
        for call in [*calls, chore_call]:
            call.cancel()

