"""Leases over real gRPC: requeue on bot death, the retry budget, cancellation,
lost answers, worker failures and the long-poll."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import code_pb2, status_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from cas.timestamps import timestamp_of as timestamp
from tests.execution.conftest import ExecEnv, drain, metadata_of, next_with_stage, response_of, stages_of
from tests.support.actions import ActionBuilder
from tests.support.waiting import until

QUEUED, EXECUTING, COMPLETED = 2, 3, 4
GUARD = 30  # seconds: only a broken wake-up comes near this


async def test_a_held_update_is_woken_the_moment_work_arrives(env: ExecEnv) -> None:
    bot = env.bot()
    await bot.create()
    poll = asyncio.create_task(bot.poll())
    await until(lambda: env.holds(bot), "the bot's call is held")
    action = await env.actions.build()
    call = env.start(action)
    leases = await asyncio.wait_for(poll, GUARD)  # the long-poll timeout is 10 s; the guard far above
    assert [le.action_digest for le in leases] == [action.digest.to_proto()]
    call.cancel()


async def test_an_idle_long_poll_answers_empty_after_its_timeout(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(bot_long_poll_timeout=0.2) as env:
        bot = env.bot()
        await bot.create()
        assert await bot.poll() == []
        assert bot.leases == {}


async def test_a_dead_bot_s_lease_is_requeued_and_completes_on_the_other_bot(env: ExecEnv) -> None:
    action = await env.actions.build()
    doomed = env.bot()
    await doomed.create()
    call = env.start(action)
    [first] = await doomed.poll()
    survivor = env.bot()
    await survivor.create()
    poll = asyncio.create_task(survivor.poll())
    await until(lambda: env.holds(survivor), "the survivor waits")
    await env.expire(59)
    assert not poll.done()
    await env.expire(2)  # the doomed bot missed its session expiry
    [second] = await asyncio.wait_for(poll, GUARD)
    assert second.action_digest == first.action_digest and second.id != first.id
    survivor.complete(second.id)
    await survivor.quick_poll()
    operations = await drain(call)
    assert stages_of(operations)[-3:] == [QUEUED, EXECUTING, COMPLETED]
    assert response_of(operations[-1]).result.execution_metadata.worker == survivor.bot_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await doomed.quick_poll()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_retry_budget_exhausted_completes_unavailable_naming_the_workers(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(max_retries=1) as env:
        action = await env.actions.build()
        call = env.start(action)
        await next_with_stage(call, QUEUED)
        bots = [env.bot(bot_id="first-victim"), env.bot(bot_id="second-victim")]
        for bot in bots:
            assert len(await bot.create()) == 1
            await env.expire(61)
        response = response_of((await drain(call))[-1])
        assert response.status.code == code_pb2.UNAVAILABLE
        message = response.status.message
        assert "first-victim" in message and "second-victim" in message and "retry budget of 1" in message
        assert "bot session expired" in message


async def test_cancel_operation_cancels_the_lease_on_a_busy_bot(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot(hold_when_busy=True)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    name = (await next_with_stage(call, EXECUTING)).name
    poll = asyncio.create_task(bot.poll())  # busy, yet held: a cancellation must get through
    await until(lambda: env.holds(bot), "the busy bot's call is held")
    await lro_grpc.OperationsStub(env.channel).CancelOperation(lro_pb2.CancelOperationRequest(name=name))
    assert await asyncio.wait_for(poll, GUARD) == []
    assert bot.cancelled == [lease.id] and bot.leases == {}
    response = response_of((await drain(call))[-1])
    assert response.status.code == code_pb2.CANCELLED
    assert await bot.quick_poll() == []


async def test_a_late_report_for_a_cancelled_lease_is_ignored(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    name = (await next_with_stage(call, EXECUTING)).name
    await lro_grpc.OperationsStub(env.channel).CancelOperation(lro_pb2.CancelOperationRequest(name=name))
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0))
    await bot.quick_poll()
    assert response_of((await drain(call))[-1]).status.code == code_pb2.CANCELLED
    assert await env.server.instances.get("").ac.get_or_none(action.digest) is None


async def test_cancelling_one_of_two_shared_operations_keeps_the_execution(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    quitter, stayer = env.start(action), env.start(action)
    [lease] = await bot.poll()
    name = (await next_with_stage(quitter, EXECUTING)).name
    await next_with_stage(stayer, EXECUTING)
    await lro_grpc.OperationsStub(env.channel).CancelOperation(lro_pb2.CancelOperationRequest(name=name))
    assert response_of((await drain(quitter))[-1]).status.code == code_pb2.CANCELLED
    assert list(bot.leases) == [lease.id] and (await bot.quick_poll()) == []
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"kept"))
    await bot.quick_poll()
    assert response_of((await drain(stayer))[-1]).result.stdout_raw == b"kept"


async def test_worker_failure_statuses_requeue_and_others_reach_the_client(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    bot.complete(lease.id, status=status_pb2.Status(code=code_pb2.INTERNAL, message="disk full"))
    [again] = await bot.quick_poll()  # requeued, and this bot is free again
    assert again.id != lease.id and again.action_digest == lease.action_digest
    bot.complete(again.id, status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message="no"))
    await bot.quick_poll()
    response = response_of((await drain(call))[-1])
    assert response.status.code == code_pb2.PERMISSION_DENIED and response.status.message == "no"


async def test_an_answer_lost_in_transit_is_sent_again(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    bot.leases.clear()  # as if the answer never arrived
    [again] = await bot.quick_poll()
    assert again.id == lease.id
    call.cancel()


async def test_a_bot_that_restarts_gets_its_lost_work_back_under_a_new_lease(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    restarted = env.bot(bot_id=bot.bot_id)
    [again] = await restarted.create()
    assert again.id != lease.id and again.action_digest == lease.action_digest
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await bot.quick_poll()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    call.cancel()


async def test_unhealthy_bots_get_no_work(env: ExecEnv) -> None:
    from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2

    action = await env.actions.build()
    call = env.start(action)
    await next_with_stage(call, QUEUED)
    sick = env.bot(status=bots_pb2.BotStatus.UNHEALTHY)
    assert await sick.create() == []
    sick.status = bots_pb2.BotStatus.OK
    assert len(await sick.quick_poll()) == 1
    call.cancel()


async def test_execute_response_results_timestamps_and_partial_metadata(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    name = (await next_with_stage(call, EXECUTING)).name
    progress = re_pb2.ExecutedActionMetadata(input_fetch_start_timestamp=timestamp(env.clock.now() + 1))
    await bot.quick_poll(metadata=((f"partial-execution-metadata-{lease.id}-bin", progress.SerializeToString()),))
    current = await lro_grpc.OperationsStub(env.channel).GetOperation(lro_pb2.GetOperationRequest(name=name))
    assert metadata_of(current).partial_execution_metadata == progress
    result = re_pb2.ActionResult(exit_code=0)
    meta = result.execution_metadata
    meta.worker = "pretty-name"
    for field in ("worker_start", "input_fetch_start", "input_fetch_completed", "execution_start",
                  "execution_completed", "output_upload_start", "output_upload_completed", "worker_completed"):
        getattr(meta, f"{field}_timestamp").CopyFrom(timestamp(env.clock.now() + 5))
    bot.complete(lease.id, re_pb2.ExecuteResponse(result=result, message="ran fine", server_logs={}))
    await bot.quick_poll()
    response = response_of((await drain(call))[-1])
    assert response.message == "ran fine"
    got = response.result.execution_metadata
    assert got.worker == "pretty-name"
    assert got.execution_start_timestamp == timestamp(env.clock.now() + 5)
    assert got.worker_start_timestamp == timestamp(env.clock.now() + 5)  # the bot's own stamp is kept
    assert got.queued_timestamp == timestamp(env.clock.now())


async def test_blake3_actions_tell_the_bot_their_digest_function(env: ExecEnv) -> None:
    blake3 = ActionBuilder(env.server.instances.get("").cas, re_pb2.DigestFunction.BLAKE3)
    action = await blake3.build(inputs={"f": b"data"})
    bot = env.bot()
    await bot.create()
    call = env.execution.Execute(re_pb2.ExecuteRequest(
        action_digest=action.digest.to_proto(), digest_function=re_pb2.DigestFunction.BLAKE3
    ))
    [lease] = await bot.poll()
    assert lease.metadata.digest_function == re_pb2.DigestFunction.BLAKE3
    bot.complete(lease.id)
    await bot.quick_poll()
    last = (await drain(call))[-1]
    assert metadata_of(last).digest_function == re_pb2.DigestFunction.BLAKE3
    assert response_of(last).status.code == code_pb2.OK


async def test_a_report_survives_its_call_being_cancelled_mid_way(env: ExecEnv) -> None:
    """The bot may cancel a call after sending it; the completion it carried must still land."""
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    results = env.server.execution.results  # type: ignore[union-attr]
    real_store = results.store
    storing, release = asyncio.Event(), asyncio.Event()

    async def slow_store(*args):  # type: ignore[no-untyped-def]
        storing.set()
        await release.wait()  # the action cache write is in progress ...
        await real_store(*args)

    results.store = slow_store  # type: ignore[method-assign]  # the test holds the AC write open
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"kept"))
    report = asyncio.create_task(bot.poll())
    await asyncio.wait_for(storing.wait(), GUARD)
    report.cancel()  # ... when the bot hangs up
    await asyncio.gather(report, return_exceptions=True)
    await asyncio.sleep(0.05)
    release.set()
    response = response_of((await drain(call))[-1])
    assert response.result.stdout_raw == b"kept"
    assert await env.server.instances.get("").ac.get_or_none(action.digest) is not None
