"""The permission table covers every method the server serves, finds the instance name
where each request carries it, and a method it does not know is refused, not allowed."""

from __future__ import annotations

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.longrunning import operations_pb2
from server.auth.authenticator import Authenticator
from server.auth.certificates import CertificateRules
from server.auth.authorizer import Authorizer
from server.auth.methods import RULES, instance_of_operation, instance_of_resource, instance_of_session
from server.auth.permissions import EVERY_INSTANCE, Identity, InstanceScope, Permission
from server.auth.tokens import TokenTable
from server.rpc_wrapping import registrar

SERVED = [remote_execution_pb2, bytestream_pb2, operations_pb2, bots_pb2, remote_logstream_pb2, remote_asset_pb2]


def served_methods() -> set[str]:
    return {f"/{service.full_name}/{method.name}"
            for module in SERVED for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods}


def test_every_served_method_has_a_rule_and_no_rule_is_stale() -> None:
    assert served_methods() == set(RULES)


@pytest.mark.parametrize(("name", "instance"), [
    ("blobs/" + "a" * 64 + "/3", ""),
    ("ci/linux/blobs/" + "a" * 64 + "/3", "ci/linux"),
    ("ci/uploads/0b1c/blobs/" + "a" * 64 + "/3", "ci"),
    ("ci/compressed-blobs/zstd/" + "a" * 64 + "/3", "ci"),
    ("ci/executions/" + "e" * 32 + "/logstreams/" + "f" * 32, "ci"),
    ("ci/x/executions/" + "e" * 32 + "/logstreams/" + "f" * 32 + "/write/" + "0" * 32, "ci/x"),
    ("executions/" + "e" * 32 + "/logstreams/" + "f" * 32, ""),
    ("projects/p/logstreams/" + "f" * 32, "projects/p"),
])
def test_instance_of_a_resource_name(name: str, instance: str) -> None:
    assert instance_of_resource(name) == instance


def test_instance_of_operation_and_session_names() -> None:
    assert instance_of_operation("ci/linux/operations/abc") == "ci/linux"
    assert instance_of_operation("operations/abc") == ""
    assert instance_of_session("ci/0123") == "ci"
    assert instance_of_session("0123") == ""


def test_instance_prefixes_match_whole_segments() -> None:
    scope = InstanceScope(("ci", ""))
    assert scope.covers("ci") and scope.covers("ci/linux") and scope.covers("")
    assert not scope.covers("cinema") and not scope.covers("dev")
    assert EVERY_INSTANCE.covers("anything/at/all")
    reader = Identity("r", frozenset({Permission.READ}), InstanceScope(("dev",)))
    assert reader.may(Permission.READ, "dev/x") and not reader.may(Permission.WRITE, "dev")
    assert not reader.may(Permission.READ, "ci")


async def test_a_method_without_a_rule_is_refused() -> None:
    tokens = TokenTable()
    tokens.add("t", Identity("everyone", frozenset(Permission)))
    authorizer = Authorizer(Authenticator(tokens, None, CertificateRules([]), Identity(
        "anonymous", frozenset(Permission), method="anonymous")))

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("test.Unlisted", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server()
    registrar(server, [authorizer]).add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Unlisted/Echo")(b"hi")
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "/test.Unlisted/Echo has no permission rule" in caught.value.details()
    finally:
        await server.stop(None)
