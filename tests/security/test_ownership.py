"""Operations belong to the identity whose Execute made them; bot sessions (and the bot
id they were opened for) to the identity that opened them (issue 9, acceptance 4).

Another identity with ``execute`` cannot watch, cancel or delete someone's operation
(``admin`` can); another identity with ``worker`` cannot update, report on or take over
someone's bot session, while the actions keep running on the session's own bot."""

from __future__ import annotations

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.security.conftest import FarmFactory
from tests.support.actions import ActionBuilder
from tests.support.test_bot import TestBot
from tests.support.tokens import TokenFile

CLIENT = ["read", "write", "execute"]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_operations_are_their_creators_and_admins(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    ci, developers = token_file.add("ci", CLIENT), token_file.add("developers", CLIENT)
    admin, workers = token_file.add("operators", ["admin"]), token_file.add("workers", ["worker"])
    async with (
        farm_factory() as farm, farm.channel(token=ci) as ci_channel, farm.channel(token=developers) as dev_channel,
        farm.channel(token=admin) as admin_channel, farm.channel(token=workers) as bot_channel,
    ):
        action = await ActionBuilder(farm.server.instances.get("").cas).build(["true"], inputs={"x": b"x"})
        bot = TestBot(bot_channel, bot_id="farm-bot")
        await bot.create()
        call = re_grpc.ExecutionStub(ci_channel).Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
        name = (await call.read()).name

        get = lro_pb2.GetOperationRequest(name=name)
        err = await refused(lro_grpc.OperationsStub(dev_channel).GetOperation(get))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == (
            f"GetOperation: operation {name!r} belongs to identity 'token:ci', not to identity 'developers' (token) "
            "(acting on another identity's operations needs the admin permission)")
        for other in (
            lro_grpc.OperationsStub(dev_channel).CancelOperation(lro_pb2.CancelOperationRequest(name=name)),
            lro_grpc.OperationsStub(dev_channel).DeleteOperation(lro_pb2.DeleteOperationRequest(name=name)),
            lro_grpc.OperationsStub(dev_channel).WaitOperation(lro_pb2.WaitOperationRequest(name=name)),
        ):
            assert (await refused(other)).code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in re_grpc.ExecutionStub(dev_channel).WaitExecution(re_pb2.WaitExecutionRequest(name=name)):
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

        assert (await lro_grpc.OperationsStub(ci_channel).GetOperation(get)).name == name
        assert (await lro_grpc.OperationsStub(admin_channel).GetOperation(get)).name == name
        listed = await lro_grpc.OperationsStub(admin_channel).ListOperations(lro_pb2.ListOperationsRequest())
        assert name in [op.name for op in listed.operations]

        [lease] = await bot.poll()
        bot.complete(lease.id, re_pb2.ActionResult(exit_code=0))
        await bot.quick_poll()
        assert [op async for op in call][-1].done


async def test_bot_sessions_are_bound_to_the_identity_that_opened_them(
    farm_factory: FarmFactory, token_file: TokenFile
) -> None:
    ci, pool_a, pool_b = token_file.add("ci", CLIENT), token_file.add("pool-a", ["worker"]), token_file.add(
        "pool-b", ["worker"])
    async with (
        farm_factory() as farm, farm.channel(token=ci) as client, farm.channel(token=pool_a) as a_channel,
        farm.channel(token=pool_b) as b_channel,
    ):
        owner = TestBot(a_channel, bot_id="bot-1")
        await owner.create()

        takeover = TestBot(b_channel, bot_id="bot-1")  # the same bot id: would close the owner's session
        err = await refused(takeover.create())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "bot 'bot-1' belongs to identity 'token:pool-a', not to identity 'pool-b' (token)" in err.details()

        impostor = TestBot(b_channel, bot_id="bot-1", name=owner.name)  # reports on the owner's session
        err = await refused(impostor.quick_poll())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"bot session {owner.name!r} belongs to identity 'token:pool-a'" in err.details()

        # The owner's session is untouched and keeps running actions.
        action = await ActionBuilder(farm.server.instances.get("").cas).build(["true"], inputs={"y": b"y"})
        call = re_grpc.ExecutionStub(client).Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
        [lease] = await owner.poll()
        owner.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"done by bot-1"))
        await owner.quick_poll()
        last = [op async for op in call][-1]
        response = re_pb2.ExecuteResponse()
        assert last.response.Unpack(response) and response.result.stdout_raw == b"done by bot-1"

        # Its own identity may replace it (a restarted worker), as without authentication.
        again = TestBot(a_channel, bot_id="bot-1")
        await again.create()
        assert again.name != owner.name
