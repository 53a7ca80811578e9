"""Many bots over three replicas drain a deep queue: none lost, none run twice.

The small sibling of tests/benchmarks/bench_replicas.py's 1,000 bots and 100,000
actions: three in-process replicas on one Redis state, actions submitted through
all of them, then bots spread over all of them take the whole queue at once. Every
action must reach exactly one bot exactly once, and every operation must complete.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from tests.execution.conftest import Replica
from tests.support.actions import ActionBuilder
from tests.support.test_bot import TestBot

ACTIONS = 400
BOTS = 30


async def queue_one(replica: Replica, digest: re_pb2.Digest) -> str:
    """Execute until the operation is named, then hang up (the operation goes on)."""
    call = replica.execution.Execute(re_pb2.ExecuteRequest(action_digest=digest))
    name = (await call.read()).name
    call.cancel()
    return name


async def drain(bot: TestBot, ran: Counter[str], total: int) -> None:
    await bot.create()
    while sum(ran.values()) < total:
        for lease in [le for le in bot.leases.values() if le.completed is None]:
            ran[lease.action_digest.hash] += 1
            bot.complete(lease.id)
        await bot.resent_poll(6.0)  # held up to 80% of it; a busy machine may miss the rest
    for lease in [le for le in bot.leases.values() if le.completed is None]:
        ran[lease.action_digest.hash] += 1  # must stay empty: everything ran already
    if any(le.completed is not None for le in bot.leases.values()):
        await bot.quick_poll()  # report the last completions


async def test_bots_over_three_replicas_run_every_queued_action_exactly_once(replicas: list[Replica]) -> None:
    builder = ActionBuilder(replicas[0].server.instances.get("").cas)
    actions = [await builder.build([f"action-{i}"]) for i in range(ACTIONS)]
    names = await asyncio.gather(*(
        queue_one(replicas[i % 3], action.digest.to_proto()) for i, action in enumerate(actions)
    ))
    assert await replicas[0].server.execution.scheduler.state.queued_count() == ACTIONS  # type: ignore[union-attr]

    ran: Counter[str] = Counter()
    bots = [TestBot(replicas[i % 3].channel, bot_id=f"drainer-{i}") for i in range(BOTS)]
    await asyncio.wait_for(asyncio.gather(*(drain(bot, ran, ACTIONS) for bot in bots)), 300)

    assert set(ran) == {action.digest.hash for action in actions}, "an action was lost"
    assert max(ran.values()) == 1, f"ran twice: {[h for h, n in ran.items() if n > 1]}"
    assert sum(len(set(bot.seen)) for bot in bots) == ACTIONS
    for i, name in enumerate(names):
        operation = await replicas[(i + 1) % 3].operations.GetOperation(lro_pb2.GetOperationRequest(name=name))
        assert operation.done, name
