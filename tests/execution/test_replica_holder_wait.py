"""Locality's wait for the holder over several replicas sharing one Redis state: the wait
lives in Redis with the queued execution, so whichever replica the holder talks to ends
it when the holder moves on, and whichever replica is alive ends it at its deadline.

Two in-process servers share a real redis-server (scheduler state, CAS, action cache),
with ``dispatch = "locality"`` and the holder wait on (the default).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.execution.conftest import Replica, replica_set
from tests.execution.locality_helpers import BIG, GUARD, holding, inputs_of
from tests.support.actions import ActionBuilder, BuiltAction
from tests.support.fake_clock import FakeClock
from tests.support.test_bot import ReceivedLease, TestBot
from tests.support.waiting import until

HOLDER_WAIT_MAX = 5.0
X86 = [("OSFamily", "linux"), ("ISA", "x86-64")]
ARM = [("OSFamily", "linux"), ("ISA", "arm-a64")]


@pytest.fixture
async def two_replicas(redis_url: str, clock: FakeClock) -> AsyncIterator[list[Replica]]:
    prefix = f"holderwait:{uuid.uuid4().hex}:"
    async with replica_set(redis_url, clock, 2, prefix, dispatch="locality",
                           locality_holder_wait_max=HOLDER_WAIT_MAX) as out:
        yield out


async def _build(replica: Replica, name: str, platform: dict[str, str] | None = None) -> BuiltAction:
    files = {f"{name}/{i}.h": bytes([i]) * BIG + name.encode() for i in range(3)}
    return await ActionBuilder(replica.server.instances.get("").cas).build(["cc", name], inputs=files,
                                                                          platform=platform)


def _execute(replica: Replica, action: BuiltAction, priority: int = 0) -> grpc.aio.UnaryStreamCall:
    return replica.execution.Execute(re_pb2.ExecuteRequest(
        action_digest=action.digest.to_proto(), execution_policy=re_pb2.ExecutionPolicy(priority=priority)))


async def _holds(replica: Replica, bot: TestBot) -> bool:
    session = await replica.server.execution.scheduler.state.session(bot.name)  # type: ignore[union-attr]
    return session is not None and session.holding


async def _waiting(replica: Replica, bot: TestBot) -> asyncio.Task[list[ReceivedLease]]:
    """The bot's session, then a call of it held on ``replica``, waiting for work."""
    await bot.create()
    poll = asyncio.create_task(bot.poll())
    await until(lambda: _holds(replica, bot), f"{bot.bot_id} waits for work")
    return poll


async def _queued(replica: Replica, count: int) -> None:
    state = replica.server.execution.scheduler.state  # type: ignore[union-attr]

    async def enough() -> bool:
        return await state.queued_count() >= count
    await until(enough, f"{count} queued")


async def _busy_holder(replica: Replica, clients: Replica, held: BuiltAction) -> tuple[TestBot, ReceivedLease, grpc.aio.UnaryStreamCall]:
    """A one-slot x86 bot on ``replica`` holding ``held``'s inputs, running another action."""
    chore = await _build(clients, "chore")
    holder = TestBot(replica.channel, bot_id="holder", summary_size=8192, cache=holding(inputs_of(held)),
                     properties=X86)
    poll = await _waiting(replica, holder)
    call = _execute(clients, chore)
    [lease] = await asyncio.wait_for(poll, GUARD)
    return holder, lease, call


async def _holder_busy_and_rival_waiting_on_b(
        replica_a: Replica, replica_b: Replica) -> tuple[BuiltAction, grpc.aio.UnaryStreamCall, asyncio.Task[list[ReceivedLease]]]:
    """The action to place (built on A), its holder busy on B, and the idle rival's call held on B."""
    held = await _build(replica_a, "held")
    _, _, chore_call = await _busy_holder(replica_b, replica_a, held)
    rival = TestBot(replica_b.channel, bot_id="rival", summary_size=8192, cache=holding(), properties=ARM)
    return held, chore_call, await _waiting(replica_b, rival)


async def _past_the_deadline_the_rival_gets_it(replica_b: Replica, clock: FakeClock,
                                               rival_poll: asyncio.Task[list[ReceivedLease]], held: BuiltAction) -> None:
    """Past ``locality_holder_wait_max``, B's tick ends the wait: the rival's held call gets the action."""
    clock.advance(HOLDER_WAIT_MAX + 1)
    await replica_b.server.execution.scheduler.tick()  # type: ignore[union-attr]
    [lease] = await asyncio.wait_for(rival_poll, GUARD)
    assert lease.action_digest == held.digest.to_proto()


async def test_a_wait_begun_on_one_replica_ends_when_the_holder_moves_on_through_another(
        two_replicas: list[Replica]) -> None:
    """The action waits for its busy holder (the wait begins on A, where it is executed);
    the holder, on B, is then given other work (an urgent action only it can run): it
    moved on, so the idle bot (on A) gets the action at once, without asking again."""
    replica_a, replica_b = two_replicas
    held = await _build(replica_a, "held")
    x86_only = await _build(replica_a, "x86only", platform=dict(X86))
    holder, chore, chore_call = await _busy_holder(replica_b, replica_a, held)
    rival = TestBot(replica_a.channel, bot_id="rival", summary_size=8192, cache=holding(), properties=ARM)
    rival_poll = await _waiting(replica_a, rival)
    calls = [_execute(replica_a, held)]
    await _queued(replica_a, 1)  # it waits for the holder, though the rival waits
    assert not rival_poll.done()
    calls.append(_execute(replica_a, x86_only, priority=-1000))
    await _queued(replica_a, 2)
    holder.complete(chore.id)
    got = await holder.poll(timeout=GUARD)  # on B: the urgent action, other work than what waits for it
    assert [lease.action_digest for lease in got] == [x86_only.digest.to_proto()]
    [lease] = await asyncio.wait_for(rival_poll, GUARD)
    assert lease.action_digest == held.digest.to_proto()
    for call in [*calls, chore_call]:
        call.cancel()


async def test_the_holder_taking_it_through_another_replica_ends_the_wait_there(two_replicas: list[Replica]) -> None:
    """The wait begun on A; the holder asks on B: it gets the action (its own backlog)."""
    replica_a, replica_b = two_replicas
    held = await _build(replica_a, "held")
    holder, chore, chore_call = await _busy_holder(replica_b, replica_a, held)
    rival = TestBot(replica_a.channel, bot_id="rival", summary_size=8192, cache=holding(), properties=ARM)
    rival_poll = await _waiting(replica_a, rival)
    call = _execute(replica_a, held)
    await _queued(replica_a, 1)
    holder.complete(chore.id)
    got = await holder.poll(timeout=GUARD)
    assert [lease.action_digest for lease in got] == [held.digest.to_proto()]
    assert not rival_poll.done()
    for pending in (call, chore_call, rival_poll):
        pending.cancel()


async def test_a_wait_begun_on_a_replica_that_stops_ends_at_its_deadline_on_another(
        two_replicas: list[Replica], clock: FakeClock) -> None:
    """The replica that began the wait stops; past ``locality_holder_wait_max`` the other
    replica's tick ends it, and the idle bot gets the action: no wait strands an action."""
    replica_a, replica_b = two_replicas
    held, chore_call, rival_poll = await _holder_busy_and_rival_waiting_on_b(replica_a, replica_b)
    call = _execute(replica_a, held)
    await _queued(replica_b, 1)
    assert not rival_poll.done()
    await replica_a.server.stop(None)
    await _past_the_deadline_the_rival_gets_it(replica_b, clock, rival_poll, held)
    for pending in (call, chore_call):
        pending.cancel()


async def test_a_replica_stopping_while_it_places_a_new_action_finishes_placing_it_first(
        two_replicas: list[Replica], clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping replica A while it judges where a new action goes (queued already, the
    holder wait not begun): the stop lets that step finish, so the wait is kept in Redis
    and B's tick ends it at its deadline. Cut short, the action would stay queued, out of
    any wait, while the idle bot's call is held on B."""
    replica_a, replica_b = two_replicas
    held, chore_call, rival_poll = await _holder_busy_and_rival_waiting_on_b(replica_a, replica_b)
    placement = replica_a.server.execution.scheduler.state.placement  # type: ignore[union-attr]
    judging, go_on = asyncio.Event(), asyncio.Event()
    choose_bot = placement.choose_bot

    async def paused_choose_bot(*args: object) -> None:
        judging.set()
        await go_on.wait()
        await choose_bot(*args)
    monkeypatch.setattr(placement, "choose_bot", paused_choose_bot)
    call = _execute(replica_a, held)
    await asyncio.wait_for(judging.wait(), GUARD)
    stopping = asyncio.create_task(replica_a.server.stop(None))
    await asyncio.wait([stopping], timeout=0.5)  # a stop that does not wait is over by now
    go_on.set()
    await asyncio.wait_for(stopping, GUARD)
    assert not rival_poll.done()
    await _past_the_deadline_the_rival_gets_it(replica_b, clock, rival_poll, held)
    for pending in (call, chore_call):
        pending.cancel()
