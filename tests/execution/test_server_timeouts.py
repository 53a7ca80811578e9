"""Server-side timeouts over real gRPC: a bot that holds a lease past its action's
timeout plus ``timeout_grace`` while its session stays alive (a hung worker) has the
execution ended DEADLINE_EXCEEDED and the lease taken back, and is told to stop it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from google.rpc import code_pb2

from cas.remote.store import RemoteStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.execution.conftest import drain, next_with_stage, response_of
from tests.support.actions import ActionBuilder
from tests.support.server_process import reapi_server_process, server_config
from tests.support.test_bot import TestBot

EXECUTING = 3
GUARD = 30


async def test_a_hung_bot_s_action_ends_deadline_exceeded_and_the_bot_is_told(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(timeout_grace=60, bot_session_timeout=3600) as env:
        action = await env.actions.build(timeout=10)
        hung = env.bot(hold_when_busy=True)
        await hung.create()
        call = env.start(action)
        [lease] = await hung.poll()
        await next_with_stage(call, EXECUTING)
        # Its session stays alive (it keeps calling); before timeout + grace nothing happens.
        await env.expire(69)
        assert await hung.quick_poll() == [] and list(hung.leases) == [lease.id]
        poll = asyncio.create_task(hung.poll())  # held: the end must reach it
        await env.expire(2)
        assert await asyncio.wait_for(poll, GUARD) == []
        assert hung.cancelled == [lease.id] and hung.leases == {}
        response = response_of((await drain(call))[-1])
        assert response.status.code == code_pb2.DEADLINE_EXCEEDED
        message = response.status.message
        assert f"on worker {hung.bot_id}, past its timeout (10s) plus the server's timeout_grace (60s)" in message
        # The worker, unstuck, reports it after all: ignored. Its slot takes new work.
        hung.leases[lease.id] = lease
        hung.complete(lease.id)
        assert await hung.quick_poll() == [] and hung.leases == {}
        following = await env.actions.build(timeout=10)
        next_call = env.start(following)
        [second] = await hung.poll()
        assert second.action_digest == following.digest.to_proto()
        next_call.cancel()


async def test_an_action_without_a_timeout_gets_max_action_timeout(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(timeout_grace=5, max_action_timeout=100, bot_session_timeout=3600) as env:
        action = await env.actions.build()
        bot = env.bot()
        await bot.create()
        call = env.start(action)
        [lease] = await bot.poll()
        await env.expire(104)
        assert await bot.quick_poll() == [] and lease.id in bot.leases
        await env.expire(2)
        await bot.quick_poll()
        assert bot.cancelled == [lease.id]
        response = response_of((await drain(call))[-1])
        assert response.status.code == code_pb2.DEADLINE_EXCEEDED
        assert "past max_action_timeout, as it sets no timeout (100s)" in response.status.message


async def test_a_server_process_ends_a_hung_bot_s_action_in_real_time(tmp_path: Path) -> None:
    """The same against a real server process, its own clock and tick."""
    config = server_config(tmp_path / "server", execution={"timeout_grace": 0.5, "tick_interval": 0.1})
    with reapi_server_process(tmp_path / "server", config) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            action = await ActionBuilder(RemoteStore(channel)).build(timeout=1)
            hung = TestBot(channel, "hung-bot", hold_when_busy=True)
            await hung.create()
            call = re_grpc.ExecutionStub(channel).Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
            [lease] = await hung.poll()
            keep_alive = asyncio.create_task(hung.poll())  # held; its session stays alive
            response = response_of((await asyncio.wait_for(drain(call), GUARD))[-1])
            assert response.status.code == code_pb2.DEADLINE_EXCEEDED, response.status
            assert "hung-bot, past its timeout (1s)" in response.status.message
            await asyncio.wait_for(keep_alive, GUARD)
            assert hung.cancelled == [lease.id]
        assert "the server ended it and told the worker to stop it" in server.process.log_text()
