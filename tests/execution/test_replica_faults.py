"""Replicas and Redis failing for real: kill -9 of a replica, Redis stopped (SIGSTOP)
and resumed, and a full restart of Redis and every replica with AOF persistence.

Replicas are real ``reapi-server`` processes (tests/support/replicas.py) sharing a
real redis-server; clients and bots are real gRPC clients (TestBot). Time is real
here, with short session timeouts; waits poll for what must happen, never assert
how fast it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cas.remote.store import RemoteStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.execution.conftest import drain, response_of
from tests.support.actions import ActionBuilder, BuiltAction
from tests.support.redis_process import RedisProcess, running_redis
from tests.support.replicas import ReplicaSet
from tests.support.test_bot import ReceivedLease, TestBot
from tests.support.waiting import eventually



@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with running_redis(tmp_path / "redis", appendonly=True) as process:
        yield process


async def build(replicas: ReplicaSet, index: int, count: int = 1) -> list[BuiltAction]:
    store = RemoteStore(replicas.channel(index))
    builder = ActionBuilder(store)
    return [await builder.build([f"step-{i}"]) for i in range(count)]


async def wait_done(replicas: ReplicaSet, index: int, name: str) -> re_pb2.ExecuteResponse:
    """WaitExecution on replica ``index`` until the operation completes."""
    stub = re_grpc.ExecutionStub(replicas.channel(index))

    async def last() -> lro_pb2.Operation:
        return (await drain(stub.WaitExecution(re_pb2.WaitExecutionRequest(name=name))))[-1]

    return response_of(await eventually(last, grpc.aio.AioRpcError))


async def test_a_killed_replica_loses_nothing(tmp_path: Path, redis: RedisProcess) -> None:
    with ReplicaSet(tmp_path, redis, count=3) as replicas:
        try:
            survivor_action, orphan_action = await build(replicas, 1, count=2)
            # A bot held on replica 0 gets work; the client's Execute streams from replica 0 too.
            mover = TestBot(replicas.channel(0), bot_id="mover")
            await mover.create()
            execute = re_grpc.ExecutionStub(replicas.channel(0))
            first = execute.Execute(re_pb2.ExecuteRequest(action_digest=survivor_action.digest.to_proto()))
            name = (await first.read()).name
            [lease] = await mover.poll()
            # A second bot on replica 0 takes the other action and dies with it.
            doomed = TestBot(replicas.channel(0), bot_id="doomed")
            await doomed.create()
            second = execute.Execute(re_pb2.ExecuteRequest(action_digest=orphan_action.digest.to_proto()))
            orphan_name = (await second.read()).name
            [orphan_lease] = await doomed.poll()

            await asyncio.to_thread(replicas.kill, 0)

            # The bot reconnects to replica 2 and finishes what it holds; the client
            # reattaches on replica 1.
            mover.channel = replicas.channel(2)
            mover.__post_init__()
            mover.complete(lease.id)
            await eventually(lambda: mover.poll(timeout=10.0), grpc.aio.AioRpcError)
            assert (await wait_done(replicas, 1, name)).status.code == 0
            # The doomed bot never calls again: its session expires, its lease is queued
            # again and a new bot runs it, once more, within the retry budget.
            rescuer = TestBot(replicas.channel(1), bot_id="rescuer")
            await rescuer.create()
            got: list[str] = []
            while not got:
                got = [le.id for le in await rescuer.resent_poll(5.0)]
            rescuer.complete(got[0])
            await rescuer.poll(timeout=10.0)
            assert (await wait_done(replicas, 2, orphan_name)).status.code == 0
            assert mover.seen == [lease.id]  # the survivor's action ran once
            assert rescuer.seen == got and got != [orphan_lease.id]  # the orphan twice: its budget allows 3 retries
            assert replicas.problems() == []
        finally:
            await replicas.aclose_channels()


async def test_a_stopped_redis_fails_calls_fast_and_they_recover(tmp_path: Path, redis: RedisProcess) -> None:
    with ReplicaSet(tmp_path, redis, count=2) as replicas:
        try:
            [before, during] = await build(replicas, 0, count=2)
            bot = TestBot(replicas.channel(1), bot_id="bot")
            await bot.create()
            execute = re_grpc.ExecutionStub(replicas.channel(0))
            redis.pause()
            try:
                for _ in range(3):  # the first waits out the timeout, the next fail at once
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await drain(execute.Execute(re_pb2.ExecuteRequest(action_digest=during.digest.to_proto()),
                                                    timeout=30))
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
                    assert redis.url in (caught.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await bot.poll(timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            finally:
                redis.resume()
            call = await eventually(lambda: _started(execute, before), grpc.aio.AioRpcError)
            [lease] = await eventually(lambda: _poll_or_reconnect(bot), grpc.aio.AioRpcError)
            bot.complete(lease.id)
            await bot.poll(timeout=10.0)
            assert response_of((await drain(call))[-1]).status.code == 0
        finally:
            await replicas.aclose_channels()


async def _poll_or_reconnect(bot: TestBot) -> list[ReceivedLease]:
    """What a worker does: poll, and start a new session if its old one expired meanwhile."""
    try:
        return await bot.poll()
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        bot.leases.clear()
        return await bot.create() or await bot.poll()


async def _started(execute: re_grpc.ExecutionStub, action: BuiltAction) -> grpc.aio.UnaryStreamCall:
    call = execute.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
    await call.read()  # raises if the server refused it
    return call


async def test_redis_and_every_replica_restarted_keep_queued_and_finished_operations(
    tmp_path: Path, redis: RedisProcess
) -> None:
    with ReplicaSet(tmp_path, redis, count=2) as replicas:
        try:
            finished_action, queued_action = await build(replicas, 0, count=2)
            execute = re_grpc.ExecutionStub(replicas.channel(0))
            bot = TestBot(replicas.channel(1), bot_id="before")
            await bot.create()
            first = execute.Execute(re_pb2.ExecuteRequest(action_digest=finished_action.digest.to_proto()))
            finished_name = (await first.read()).name
            [lease] = await bot.poll()
            bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"kept"))
            await bot.poll(timeout=10.0)
            await drain(first)
            second = execute.Execute(re_pb2.ExecuteRequest(action_digest=queued_action.digest.to_proto()))
            queued_name = (await second.read()).name  # queued: the bot is busy calling no more
            await replicas.aclose_channels()

            for index in list(replicas.running):
                await asyncio.to_thread(replicas.kill, index)
            await asyncio.to_thread(redis.kill)
            await asyncio.to_thread(redis.start)  # appendonly: the AOF brings everything back
            for index in range(2):
                await asyncio.to_thread(replicas.start, index)

            operations = lro_grpc.OperationsStub(replicas.channel(1))
            done = await eventually(lambda: operations.GetOperation(lro_pb2.GetOperationRequest(name=finished_name)),
                                    grpc.aio.AioRpcError)
            assert done.done and response_of(done).result.stdout_raw == b"kept"
            after = TestBot(replicas.channel(0), bot_id="after")
            [again] = await eventually(after.create, grpc.aio.AioRpcError) or await after.poll()
            assert again.action_digest.hash == queued_action.digest.hash
            after.complete(again.id)
            await after.poll(timeout=10.0)
            assert (await wait_done(replicas, 1, queued_name)).status.code == 0
        finally:
            await replicas.aclose_channels()
