"""What the locality tests share: bots holding an action's inputs, actions queued in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import Any

import grpc
import pytest

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from server.scheduler.locality import LOCALITY
from server.scheduler.state.interface import StateFactory
from server.scheduler.state.memory.state import memory_state
from tests.execution.conftest import ExecEnv
from tests.support.actions import BuiltAction
from tests.support.test_bot import ReceivedLease, TestBot
from tests.support.waiting import until

@pytest.fixture(name="scheduler_state")
def memory_state_only() -> StateFactory:
    """The bounded wait (``locality_wait``) is the memory state's only: a config asking
    for it with the Redis state is refused (server/scheduler/config.py)."""
    return memory_state


GUARD = 20.0
BIG = 64 << 10  # input files big enough that holding them beats min_gain


def holding(digests: Iterable[Digest] = ()) -> bytes:
    """A cache summary that holds ``digests``."""
    summary = DigestFilter(8192, 5)
    summary.add_all(d.hash for d in digests)
    return summary.to_bytes()


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
        await until(partial(_queued_at_least, env, before + len(calls)), "queued")
    return calls


async def _queued_at_least(env: ExecEnv, count: int) -> bool:
    return await env.queued() >= count


async def urgent_overtakes(env: ExecEnv) -> None:
    """An urgent action goes before a queue of actions the bot holds (priorities are never crossed)."""
    held = [await with_inputs(env, f"held{i}") for i in range(5)]
    urgent = await with_inputs(env, "urgent")
    calls = await queue(env, held)
    calls += await queue(env, [urgent], priority=-1000)
    bot = env.bot(summary_size=8192, cache=holding(d for a in held for d in inputs_of(a)))
    [lease] = await bot.create()
    assert lease.action_digest == urgent.digest.to_proto()
    for call in calls:
        call.cancel()


async def passes_bounded(env: ExecEnv) -> None:
    """The oldest queued action, held by nobody, is passed over at most ``max_passes`` times."""
    stranger = await with_inputs(env, "stranger")
    held = [await with_inputs(env, f"held{i}") for i in range(12)]
    calls = await queue(env, [stranger, *held])
    bot = env.bot(summary_size=8192, cache=holding(d for a in held for d in inputs_of(a)))
    position = await taken_within_max_passes(bot, stranger, "the oldest action waited past the fairness bound")
    assert 1 <= position <= LOCALITY.max_passes  # overtaken, but only so often
    for call in calls:
        call.cancel()


async def taken_within_max_passes(bot: TestBot, action: BuiltAction, failure: str) -> int:
    """Open ``bot``'s session and finish each lease until it is given ``action``, failing
    with ``failure`` past ``max_passes`` + 1 actions; how many it was given first."""
    taken = [lease.action_digest for lease in await bot.create()]
    while action.digest.to_proto() not in taken:
        assert len(taken) <= LOCALITY.max_passes + 1, failure
        for lease_id in list(bot.leases):
            bot.complete(lease_id)
        taken += [lease.action_digest for lease in await bot.poll(timeout=GUARD)]
    return taken.index(action.digest.to_proto())


async def lower_priority_not_taken_while_better_waits(env: ExecEnv) -> None:
    """A deep queue of a lower priority (1) that the asking bot holds, and an action of
    the default priority (better, not urgent) that a busy bot holds and waits for: the
    asker takes nothing (priorities are never crossed, in the claim's fill either), and
    the better one runs next, on its holder."""
    better = await with_inputs(env, "better")
    holder, chore, chore_call = await busy_holder(env, inputs_of(better))
    deep = [await with_inputs(env, f"deep{i}") for i in range(6)]
    calls = await queue(env, deep, priority=1)
    calls += await queue(env, [better], priority=0)
    asker = env.bot(summary_size=8192, cache=holding(d for a in deep for d in inputs_of(a)))
    assert await asker.create() == []
    assert await env.queued() == len(deep) + 1
    holder.complete(chore.id)
    got = await holder.poll(timeout=GUARD)
    assert [lease.action_digest for lease in got] == [better.digest.to_proto()]
    for call in [*calls, chore_call]:
        call.cancel()


async def busy_holder(env: ExecEnv, held: Iterable[Digest]) -> tuple[TestBot, ReceivedLease, grpc.aio.UnaryStreamCall]:
    """A one-slot bot holding ``held``, running another action (its only slot taken):
    the bot, its lease, and the Execute call of that other action."""
    chore = await with_inputs(env, "chore")
    holder = env.bot(summary_size=8192, cache=holding(held))
    [poll] = await waiting(env, holder)
    call = env.start(chore)
    [lease] = await asyncio.wait_for(poll, GUARD)
    return holder, lease, call


async def idle_bot_gets_it(env: ExecEnv, action: BuiltAction, chore_call: grpc.aio.UnaryStreamCall,
                           priority: int = 0) -> None:
    """A bot holding nothing waits for work; ``action`` (its busy holder's) is started
    (at ``priority``) and must reach that idle bot; both calls are cancelled after."""
    [idle_poll] = await waiting(env, env.bot(summary_size=8192, cache=holding()))
    call = env.start(action, execution_policy={"priority": priority})
    got = await asyncio.wait_for(idle_poll, GUARD)
    assert [lease.action_digest for lease in got] == [action.digest.to_proto()]
    for pending in (call, chore_call):
        pending.cancel()


async def holder_taking_what_it_holds_keeps_the_waiting_one(env: ExecEnv, waiting_priority: int,
                                                            taken_priority: int) -> None:
    """A busy holder holds ``held`` (queued at ``waiting_priority``, so it waits for the
    holder) and ``taken`` (queued at ``taken_priority`` while both bots are busy). The
    holder takes ``taken`` first: its own work, not progress (locality.own_work), so the
    rival, idle again, is given nothing, ``held`` still waits, and the holder takes it next."""
    held = await with_inputs(env, "held")
    other = await with_inputs(env, "other")
    taken = await with_inputs(env, "taken")
    holder, chore, chore_call = await busy_holder(env, inputs_of(held) + inputs_of(taken))
    rival = env.bot(summary_size=8192, cache=holding())
    [rival_poll] = await waiting(env, rival)
    calls = await queue(env, [held], priority=waiting_priority)  # it waits for the holder
    calls.append(env.start(other))  # nobody holds it: the waiting rival gets it
    [other_lease] = await asyncio.wait_for(rival_poll, GUARD)
    calls += await queue(env, [taken], priority=taken_priority)  # both bots busy: queued
    holder.complete(chore.id)
    got = await holder.poll(timeout=GUARD)
    assert [lease.action_digest for lease in got] == [taken.digest.to_proto()]
    rival.complete(other_lease.id)
    rival_poll = asyncio.create_task(rival.poll(timeout=GUARD))

    async def holds_or_answered() -> bool:
        return rival_poll.done() or await env.holds(rival)

    await until(holds_or_answered, "the rival waits for work")
    assert not rival_poll.done(), f"the rival was given {[lease.action_digest.hash for lease in rival_poll.result()]}"
    assert await env.queued() == 1  # still waiting for its holder
    holder.complete(got[0].id)
    got = await holder.poll(timeout=GUARD)
    assert [lease.action_digest for lease in got] == [held.digest.to_proto()]
    for call in [*calls, chore_call, rival_poll]:
        call.cancel()
