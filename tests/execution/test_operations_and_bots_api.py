"""The Operations service, Bots API input errors, and what Capabilities advertises."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.execution.conftest import ExecEnv, drain, metadata_of, next_with_stage, response_of

QUEUED, EXECUTING, COMPLETED = 2, 3, 4


async def test_get_list_wait_and_delete_operations(env: ExecEnv) -> None:
    operations = lro_grpc.OperationsStub(env.channel)
    bot = env.bot()
    await bot.create()
    running_call = env.start(await env.actions.build(["running"]))
    [lease] = await bot.poll()
    running = (await next_with_stage(running_call, EXECUTING)).name
    # One at a time: Executes sent together reach the scheduler in no set order, and the
    # listing's is the order they were queued in.
    queued_calls, queued = [], []
    for i in range(3):
        queued_calls.append(env.start(await env.actions.build([f"queued-{i}"])))
        queued.append((await next_with_stage(queued_calls[-1], QUEUED)).name)

    got = await operations.GetOperation(lro_pb2.GetOperationRequest(name=running))
    assert got.name == running and metadata_of(got).stage == EXECUTING and not got.done

    listed = await operations.ListOperations(lro_pb2.ListOperationsRequest(filter="stage = QUEUED"))
    assert [op.name for op in listed.operations] == queued
    listed = await operations.ListOperations(lro_pb2.ListOperationsRequest(filter="stage != queued AND done = false"))
    assert [op.name for op in listed.operations] == [running]
    page = await operations.ListOperations(lro_pb2.ListOperationsRequest(page_size=2))
    assert [op.name for op in page.operations] == [running, queued[0]] and page.next_page_token
    page = await operations.ListOperations(lro_pb2.ListOperationsRequest(page_size=2, page_token=page.next_page_token))
    assert [op.name for op in page.operations] == queued[1:] and not page.next_page_token
    other = await operations.ListOperations(lro_pb2.ListOperationsRequest(name="some/other/instance"))
    assert list(other.operations) == []

    quick = await operations.WaitOperation(
        lro_pb2.WaitOperationRequest(name=running, timeout=duration_pb2.Duration(nanos=50_000_000))
    )
    assert not quick.done
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=7))
    await bot.quick_poll()
    finished = await operations.WaitOperation(lro_pb2.WaitOperationRequest(name=running))
    assert finished.done and response_of(finished).result.exit_code == 7
    done = await operations.ListOperations(lro_pb2.ListOperationsRequest(filter="done = true"))
    assert [op.name for op in done.operations] == [running]

    await operations.DeleteOperation(lro_pb2.DeleteOperationRequest(name=queued[0]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await operations.GetOperation(lro_pb2.GetOperationRequest(name=queued[0]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Deleting forgets the handle, not the work (the bot took one more when it reported).
    assert await env.queued() + len(bot.leases) == 3
    assert response_of((await drain(running_call))[-1]).result.exit_code == 7
    for call in queued_calls:
        call.cancel()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("stage = LOST", "unknown stage 'LOST'"), ("colour = red", "unknown field 'colour'"),
     ("stage QUEUED", "is not 'FIELD = VALUE'"), ("done != true", "done takes")],
)
async def test_bad_filters_are_invalid_argument(env: ExecEnv, text: str, fragment: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lro_grpc.OperationsStub(env.channel).ListOperations(lro_pb2.ListOperationsRequest(filter=text))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in caught.value.details()


async def test_unknown_operation_names_are_not_found(env: ExecEnv) -> None:
    operations = lro_grpc.OperationsStub(env.channel)
    for call in (operations.GetOperation(lro_pb2.GetOperationRequest(name="operations/x")),
                 operations.CancelOperation(lro_pb2.CancelOperationRequest(name="operations/x")),
                 operations.DeleteOperation(lro_pb2.DeleteOperationRequest(name="operations/x")),
                 operations.WaitOperation(lro_pb2.WaitOperationRequest(name="operations/x"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bots_api_input_errors_name_the_problem(env: ExecEnv) -> None:
    stub = bots_grpc.BotsStub(env.channel)
    cases = [
        (stub.CreateBotSession(bots_pb2.CreateBotSessionRequest(bot_session=bots_pb2.BotSession())),
         grpc.StatusCode.INVALID_ARGUMENT, "bot_id"),
        (stub.UpdateBotSession(bots_pb2.UpdateBotSessionRequest(
            name="nope", bot_session=bots_pb2.BotSession(name="nope", bot_id="b"))),
         grpc.StatusCode.NOT_FOUND, "create a new one"),
        (stub.UpdateBotSession(bots_pb2.UpdateBotSessionRequest(
            name="a", bot_session=bots_pb2.BotSession(name="b", bot_id="b"))),
         grpc.StatusCode.INVALID_ARGUMENT, "differs from bot_session.name"),
    ]
    bad_capacity = bots_pb2.BotSession(bot_id="c")
    bad_capacity.worker.configs.add(key="capacity", value="lots")
    cases.append((stub.CreateBotSession(bots_pb2.CreateBotSessionRequest(bot_session=bad_capacity)),
                  grpc.StatusCode.INVALID_ARGUMENT, "capacity='lots'"))
    for call, code, fragment in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code and fragment in caught.value.details()


async def test_a_bot_with_another_bots_session_or_a_bad_result_is_refused(env: ExecEnv) -> None:
    bot = env.bot()
    await bot.create()
    stub = bots_grpc.BotsStub(env.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateBotSession(bots_pb2.UpdateBotSessionRequest(
            name=bot.name, bot_session=bots_pb2.BotSession(name=bot.name, bot_id="impostor")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "impostor" in caught.value.details()
    call = env.start(await env.actions.build())
    [lease] = await bot.poll()
    report = bots_pb2.Lease(id=lease.id, state=bots_pb2.LeaseState.COMPLETED)
    report.result.Pack(re_pb2.Command())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateBotSession(bots_pb2.UpdateBotSessionRequest(
            name=bot.name, bot_session=bots_pb2.BotSession(name=bot.name, bot_id=bot.bot_id, leases=[report])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected an ActionResult or an ExecuteResponse" in caught.value.details()
    call.cancel()


async def test_capabilities_advertise_execution(env: ExecEnv) -> None:
    capabilities = await re_grpc.CapabilitiesStub(env.channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
    execution = capabilities.execution_capabilities
    assert execution.exec_enabled
    assert execution.digest_function == re_pb2.DigestFunction.SHA256
    assert re_pb2.DigestFunction.BLAKE3 in execution.digest_functions
    [priorities] = execution.execution_priority_capabilities.priorities
    assert (priorities.min_priority, priorities.max_priority) == (-1000, 1000)


async def test_execution_can_be_turned_off(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(enabled=False) as env:
        capabilities = await re_grpc.CapabilitiesStub(env.channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
        assert not capabilities.execution_capabilities.exec_enabled
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.run(await env.actions.build())
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
