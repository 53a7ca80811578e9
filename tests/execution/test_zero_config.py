"""The zero-config server (disk CAS and AC) serves remote execution on its one port."""

from __future__ import annotations

from pathlib import Path

import grpc

from cas.ac.action_cache import ActionCache
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.support.actions import ActionBuilder
from tests.support.servers import config_for, running_server
from tests.support.test_bot import TestBot


async def test_zero_config_runs_an_action_end_to_end_and_caches_it(tmp_path: Path) -> None:
    async with running_server(config_for(tmp_path=tmp_path)) as server:
        instance = server.instances.get("")
        action = await ActionBuilder(instance.cas).build(["cc", "-c", "a.c"], inputs={"a.c": b"int main;"})
        async with grpc.aio.insecure_channel(server.address) as channel:
            capabilities = await re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
            assert capabilities.execution_capabilities.exec_enabled
            bot = TestBot(channel, bot_id="local")
            await bot.create()
            call = re_grpc.ExecutionStub(channel).Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
            [lease] = await bot.poll()
            bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"compiled"))
            await bot.quick_poll()
            operations = [op async for op in call]
        response = re_pb2.ExecuteResponse()
        operations[-1].response.Unpack(response)
        assert response.result.stdout_raw == b"compiled"
        cached = await ActionCache(instance.ac, instance.cas).get(action.digest, inline_stdout=True)
        assert cached is not None and cached.stdout_raw == b"compiled"
