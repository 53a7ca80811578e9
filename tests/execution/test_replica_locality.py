"""Locality dispatch over several replicas sharing one Redis state: what a bot says it
holds, to whichever replica it talks to, steers dispatch on every replica.

Two in-process servers share a real redis-server (scheduler state, CAS, action cache),
with ``dispatch = "locality"``; bots talk to replica A, clients to replica B.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.execution.conftest import Replica, replica_set
from tests.execution.locality_helpers import BIG, GUARD, holding, inputs_of
from tests.support.actions import ActionBuilder, BuiltAction
from tests.support.fake_clock import FakeClock
from tests.support.test_bot import ReceivedLease, TestBot
from tests.support.waiting import until


@pytest.fixture
async def two_replicas(redis_url: str, clock: FakeClock) -> AsyncIterator[tuple[Replica, Replica]]:
    async with replica_set(redis_url, clock, 2, f"locality:{uuid.uuid4().hex}:", dispatch="locality") as out:
        yield out[0], out[1]


async def _build(replica: Replica, name: str) -> BuiltAction:
    files = {f"{name}/{i}.h": bytes([i]) * BIG + name.encode() for i in range(3)}
    return await ActionBuilder(replica.server.instances.get("").cas).build(["cc", name], inputs=files)


async def _holding_call(replica: Replica, bot: TestBot) -> asyncio.Task[list[ReceivedLease]]:
    """A call of ``bot`` held on ``replica``, waiting for work (it carries the bot's summary)."""
    poll = asyncio.create_task(bot.poll())
    await until(lambda: _holds(replica, bot), f"{bot.bot_id} waits for work on one replica")
    return poll


async def _holds(replica: Replica, bot: TestBot) -> bool:
    session = await replica.server.execution.scheduler.state.session(bot.name)  # type: ignore[union-attr]
    return session is not None and session.holding


async def _hold_again(replica: Replica, bot: TestBot, held: asyncio.Task[list[ReceivedLease]]) -> asyncio.Task[list[ReceivedLease]]:
    """End the bot's held call, then hold a new one (which carries what the bot says now)."""
    held.cancel()
    await until(lambda: _not(_holds(replica, bot)), f"{bot.bot_id}'s held call ended")
    return await _holding_call(replica, bot)


async def _not(condition: Awaitable[bool]) -> bool:
    return not await condition


def _execute(replica: Replica, action: BuiltAction) -> grpc.aio.UnaryStreamCall:
    return replica.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))


async def test_a_summary_sent_to_one_replica_steers_dispatch_on_another(two_replicas: tuple[Replica, Replica]) -> None:
    bots_side, clients_side = two_replicas
    lib = await _build(clients_side, "lib")
    first = TestBot(bots_side.channel, bot_id="first", summary_size=8192, cache=holding())
    holder = TestBot(bots_side.channel, bot_id="holder", summary_size=8192, cache=holding(inputs_of(lib)))
    await first.create()
    await holder.create()
    polls = [await _holding_call(bots_side, first), await _holding_call(bots_side, holder)]
    call = _execute(clients_side, lib)
    done, _ = await asyncio.wait(polls, timeout=GUARD, return_when=asyncio.FIRST_COMPLETED)
    [got] = [bot for bot, poll in zip((first, holder), polls) if poll in done and poll.result()]
    assert got is holder  # though the first waited longer
    call.cancel()
    for poll in polls:
        poll.cancel()


async def test_another_replica_sees_a_bots_new_summary(two_replicas: tuple[Replica, Replica]) -> None:
    """Replica B has the bots' summaries from an earlier decision; one bot then tells A it
    holds something new: B's next decision uses that, not what it had."""
    bots_side, clients_side = two_replicas
    chore, lib = await _build(clients_side, "chore"), await _build(clients_side, "lib")
    first = TestBot(bots_side.channel, bot_id="first", summary_size=8192, cache=holding())
    holder = TestBot(bots_side.channel, bot_id="holder", summary_size=8192, cache=holding())
    await first.create()
    await holder.create()
    first_poll = await _holding_call(bots_side, first)
    holder_poll = await _holding_call(bots_side, holder)
    chore_call = _execute(clients_side, chore)  # both hold nothing: the one waiting longest
    [lease] = await asyncio.wait_for(first_poll, GUARD)
    assert lease.action_digest == chore.digest.to_proto()
    first.complete(lease.id)
    first_poll = await _holding_call(bots_side, first)  # reports, waits again
    holder.cache = holding(inputs_of(lib))
    holder_poll = await _hold_again(bots_side, holder, holder_poll)  # its new summary, to A; it now waited less
    lib_call = _execute(clients_side, lib)
    [got] = await asyncio.wait_for(holder_poll, GUARD)
    assert got.action_digest == lib.digest.to_proto()
    assert not first_poll.done()
    for pending in (chore_call, lib_call, first_poll):
        pending.cancel()
