"""Several server replicas over one Redis state: any replica serves any call.

Three in-process servers share a real redis-server: the scheduler state
(``state = "redis"``), the CAS and the action cache (``redis`` stores), each under
this test's own key prefixes, and one fake clock. Clients and bots talk to them
over real gRPC, each call to whichever replica the test picks.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from tests.execution.conftest import Replica, drain, metadata_of, next_with_stage, response_of
from tests.support.actions import ActionBuilder
from tests.support.fake_clock import FakeClock
from tests.support.test_bot import TestBot

EXECUTING = 3


async def drain_bytes(call: grpc.aio.UnaryStreamCall) -> bytes:
    data = b""
    while (response := await call.read()) is not grpc.aio.EOF:
        data += response.data
    return data


async def test_execute_on_one_wait_on_another_bot_on_a_third_log_on_any(replicas: list[Replica]) -> None:
    a, b, c = replicas
    actions = ActionBuilder(a.server.instances.get("").cas)
    action = await actions.build(["make"])
    bot = TestBot(c.channel, bot_id="bot-on-c")
    await bot.create()
    held = asyncio.ensure_future(bot.poll())  # held on C, waiting for work
    execute = a.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    first = await execute.read()
    name = first.name
    [lease] = await held  # queued on A, the bot held on C has it at once
    executing = metadata_of(await next_with_stage(execute, EXECUTING))

    waiting = b.execution.WaitExecution(re_pb2.WaitExecutionRequest(name=name))
    assert metadata_of(await waiting.read()).stage == EXECUTING

    # The bot writes its stdout through C; a client tails it on A.
    reader = a.bytestream.Read(bs_pb2.ReadRequest(resource_name=executing.stdout_stream_name))
    await bot.write_log(lease.metadata.stdout_stream_name, [b"compiling\n"], finish=False)
    assert (await reader.read()).data == b"compiling\n"
    write_name = lease.metadata.stdout_stream_name
    await c.bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=write_name, write_offset=10, data=b"done\n",
                                                       finish_write=True)]))
    assert await drain_bytes(reader) == b"done\n"

    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"compiling\ndone\n"))
    await bot.quick_poll()
    assert response_of((await drain(waiting))[-1]).result.stdout_raw == b"compiling\ndone\n"
    assert response_of((await drain(execute))[-1]).result.exit_code == 0
    operation = await c.operations.GetOperation(lro_pb2.GetOperationRequest(name=name))
    assert operation.done
    cached = await b.server.instances.get("").action_cache.get(action.digest)
    assert cached is not None  # the result reached the shared action cache


async def test_identical_actions_on_two_replicas_share_one_execution(replicas: list[Replica]) -> None:
    a, b, c = replicas
    action = await ActionBuilder(a.server.instances.get("").cas).build()
    on_a = a.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    on_b = b.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    names = {(await on_a.read()).name, (await on_b.read()).name}
    assert len(names) == 2
    bot = TestBot(c.channel, bot_id="only-bot")
    [lease] = await bot.create() or await bot.poll()
    bot.complete(lease.id)
    await bot.quick_poll()
    assert response_of((await drain(on_a))[-1]).status.code == 0
    assert response_of((await drain(on_b))[-1]).status.code == 0
    assert bot.seen == [lease.id]  # it ran once


async def test_a_bot_moves_to_another_replica_and_keeps_its_session(replicas: list[Replica]) -> None:
    a, b, c = replicas
    action = await ActionBuilder(a.server.instances.get("").cas).build()
    bot = TestBot(a.channel, bot_id="mover")
    await bot.create()
    execute = b.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    [lease] = await bot.poll()
    bot.channel = c.channel  # its connection to A broke; the balancer sent it to C
    bot.__post_init__()
    bot.complete(lease.id)
    assert await bot.quick_poll() == []
    assert response_of((await drain(execute))[-1]).status.code == 0
    assert bot.seen == [lease.id] and bot.cancelled == []


async def test_a_session_expires_on_whichever_replica_ticks(replicas: list[Replica], clock: FakeClock) -> None:
    a, b, c = replicas
    action = await ActionBuilder(a.server.instances.get("").cas).build()
    lost = TestBot(a.channel, bot_id="lost")
    await lost.create()
    execute = b.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    [first] = await lost.poll()
    clock.advance(61)  # the bot went silent past bot_session_timeout
    await c.server.execution.scheduler.tick()  # type: ignore[union-attr]
    rescuer = TestBot(b.channel, bot_id="rescuer")
    [second] = await rescuer.create() or await rescuer.poll()
    assert second.action_digest == first.action_digest
    rescuer.complete(second.id)
    await rescuer.quick_poll()
    assert response_of((await drain(execute))[-1]).status.code == 0
