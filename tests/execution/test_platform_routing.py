"""Platform routing over real gRPC: each bot gets only the actions it can run."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

from tests.execution.conftest import ExecEnv, drain, next_with_stage, response_of

QUEUED = 2

X86 = [("OSFamily", "Linux"), ("ISA", "x86-64"), ("ISA", "x86-avx2"), ("cpu_count", "8")]
ARM = [("OSFamily", "linux"), ("ISA", "arm-a64"), ("cpu_count", "4")]


async def test_x86_and_arm_bots_each_get_only_their_own_actions(env: ExecEnv) -> None:
    x86_bot, arm_bot = env.bot(properties=X86, capacity=10), env.bot(properties=ARM, capacity=10)
    await x86_bot.create()
    await arm_bot.create()
    # Spellings users of other servers write, normalised on both sides.
    x86_actions = [
        await env.actions.build(["a"], platform={"OSFamily": "linux", "ISA": "x86-64"}),
        await env.actions.build(["b"], platform={"Arch": "amd64"}),
        await env.actions.build(["c"], platform={"cpu_arch": "x86_64", "OSFamily": "LINUX"}),
        await env.actions.build(["d"], platform=[("ISA", "x86-64"), ("ISA", "x86-avx2")]),
        await env.actions.build(["e"], platform={"cpu_count": "6"}),
    ]
    arm_actions = [
        await env.actions.build(["f"], platform={"ISA": "arm-a64"}),
        await env.actions.build(["g"], platform={"cpu_arch": "aarch64"}),
        await env.actions.build(["h"], platform={"Arch": "arm64", "OSFamily": "linux"}),
    ]
    calls = [env.start(a) for a in x86_actions + arm_actions]
    for call in calls:
        await next_with_stage(call, QUEUED)
    x86_got = {le.action_digest.hash for le in await x86_bot.quick_poll()}
    arm_got = {le.action_digest.hash for le in await arm_bot.quick_poll()}
    assert x86_got == {a.digest.hash for a in x86_actions}
    assert arm_got == {a.digest.hash for a in arm_actions}
    for call in calls:
        call.cancel()


async def test_buck2_style_platform_only_in_the_command_is_honoured(env: ExecEnv) -> None:
    x86_bot, arm_bot = env.bot(properties=X86), env.bot(properties=ARM)
    await x86_bot.create()
    await arm_bot.create()
    action = await env.actions.build(command_platform={"ISA": "arm-a64", "OSFamily": "linux"})
    assert not action.action.platform.properties
    call = env.start(action)
    await next_with_stage(call, QUEUED)
    assert await x86_bot.quick_poll() == []
    [lease] = await arm_bot.quick_poll()
    assert lease.action_digest == action.digest.to_proto()
    arm_bot.complete(lease.id)
    await arm_bot.quick_poll()
    assert response_of((await drain(call))[-1]).result.execution_metadata.worker == arm_bot.bot_id


async def test_action_platform_wins_over_command_platform(env: ExecEnv) -> None:
    arm_bot = env.bot(properties=ARM)
    await arm_bot.create()
    action = await env.actions.build(platform={"ISA": "arm-a64"}, command_platform={"ISA": "x86-64"})
    call = env.start(action)
    await next_with_stage(call, QUEUED)
    assert len(await arm_bot.quick_poll()) == 1
    call.cancel()


async def test_unsatisfiable_platform_is_rejected_naming_the_properties(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(worker_grace=0) as env:
        await env.bot(properties=X86).create()
        env.clock.advance(1)
        action = await env.actions.build(platform={"ISA": "arm-a64", "OSFamily": "linux"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.run(action)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = caught.value.details()
        assert "ISA=arm-a64" in message and "workers offer ISA: x86-64, x86-avx2" in message
        assert "OSFamily" not in message.split("no connected worker offers")[1].split(";")[0]


async def test_a_too_small_minimum_names_the_property(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(worker_grace=0) as env:
        await env.bot(properties=X86).create()
        env.clock.advance(1)
        action = await env.actions.build(platform={"cpu_count": "64"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.run(action)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "cpu_count=64" in caught.value.details()


async def test_non_numeric_minimum_is_invalid_argument(env: ExecEnv) -> None:
    action = await env.actions.build(platform={"cpu_count": "many"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.run(action)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cpu_count='many'" in caught.value.details()


async def test_queued_actions_fail_clearly_once_the_grace_period_ends(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(worker_grace=120) as env:
        action = await env.actions.build(platform={"ISA": "arm-a64"})
        call = env.start(action)
        await next_with_stage(call, QUEUED)  # accepted: the pool may still scale up
        await env.expire(60)
        assert await env.queued() == 1
        await env.expire(61)
        response = response_of((await drain(call))[-1])
        assert response.status.code == code_pb2.FAILED_PRECONDITION
        assert "ISA=arm-a64" in response.status.message and "worker_grace is 120s" in response.status.message
        assert await env.queued() == 0


async def test_a_matching_bot_arriving_within_the_grace_period_runs_it(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(worker_grace=120, bot_session_timeout=1000) as env:
        action = await env.actions.build(platform={"ISA": "arm-a64"})
        call = env.start(action)
        await next_with_stage(call, QUEUED)
        await env.expire(100)
        bot = env.bot(properties=ARM)
        [lease] = await bot.create()
        await env.expire(100)  # past the grace, but the action is running
        bot.complete(lease.id)
        await bot.quick_poll()
        assert response_of((await drain(call))[-1]).status.code == code_pb2.OK


async def test_ignored_keys_do_not_block_matching(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(platform={"container-image": "ignore"}) as env:
        bot = env.bot(properties=X86)
        await bot.create()
        action = await env.actions.build(platform={"container-image": "docker://gcr.io/x@sha256:1", "ISA": "x86-64"})
        call = env.start(action)
        await next_with_stage(call, QUEUED)
        assert len(await bot.quick_poll()) == 1
        call.cancel()
