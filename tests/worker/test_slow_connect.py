"""A worker's server slow to finish a new connection (busy, on a loaded machine, across a
far network) is waited for: the worker's fast reconnects after a server restart must
not cut short the connection attempt itself (worker/app.py ``channel_options``)."""

from __future__ import annotations

from pathlib import Path

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.support.servers import config_for, running_server
from tests.support.slow_relay import slow_to_answer
from worker.app import channel_options


async def test_a_server_slow_to_finish_the_connection_is_waited_for(tmp_path: Path) -> None:
    async with running_server(config_for(tmp_path=tmp_path)) as server, slow_to_answer(server.address) as relay:
        async with grpc.aio.insecure_channel(relay, options=channel_options()) as channel:
            capabilities = await re_grpc.CapabilitiesStub(channel).GetCapabilities(
                re_pb2.GetCapabilitiesRequest(), timeout=30)
    assert capabilities.cache_capabilities.digest_functions
