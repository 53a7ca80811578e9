"""server/method_table.py: every method found through one generic handler, none registered one by one."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.method_table import MethodTable
from tests.server.client import StorageClient, memory_stores
from tests.support.servers import channel_to, config_for, running_server


class FakeServer:
    """Records what the table hands the server."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        raise AssertionError("nothing is registered method by method")


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Other(grpc.GenericRpcHandler):
    def __init__(self, handler: grpc.RpcMethodHandler) -> None:
        self.handler = handler

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.handler if handler_call_details.method == "/other.Service/Call" else None  # type: ignore[attr-defined]


def test_generated_services_land_in_one_table_with_other_handlers_after_it() -> None:
    server = FakeServer()
    table = MethodTable(server)  # type: ignore[arg-type]
    re_grpc.add_ActionCacheServicer_to_server(re_grpc.ActionCacheServicer(), table)
    re_grpc.add_CapabilitiesServicer_to_server(re_grpc.CapabilitiesServicer(), table)
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    table.add_generic_rpc_handlers([Other(other)])
    assert server.generic == []  # nothing reaches the server before install
    table.install()
    first = server.generic[0]
    get = first.service(Details("/build.bazel.remote.execution.v2.ActionCache/GetActionResult"))
    assert get is not None and get.request_deserializer == re_pb2.GetActionResultRequest.FromString
    assert first.service(Details("/build.bazel.remote.execution.v2.Capabilities/GetCapabilities")) is not None
    assert first.service(Details("/other.Service/Call")) is None
    assert [h.service(Details("/other.Service/Call")) for h in server.generic[1:]][-1] is other
    with pytest.raises(RuntimeError, match="already installed"):
        table.install()


async def test_a_running_server_answers_every_kind_of_call_through_the_table() -> None:
    async with running_server(config_for(stores=memory_stores())) as server, channel_to(server) as channel:
        client = StorageClient(channel)
        digest = await client.upload(b"through the table")
        missing = await client.cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[digest.to_proto()]))
        assert list(missing.missing_blob_digests) == []
        capabilities = await re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
        assert capabilities.cache_capabilities.max_batch_total_size_bytes > 0
        unknown = channel.unary_unary("/no.Such/Method")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unknown(b"")
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
