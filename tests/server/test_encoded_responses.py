"""Hand-encoded responses are byte for byte what the message classes make."""

from __future__ import annotations

import os

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.encoded_responses import (
    encode_batch_read_response, encode_batch_update_response, encode_read_response, passing_bytes, register,
)

SIZES = [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 20, (4 << 20) - 5, 5 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_read_responses_match_the_message_class(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = bs_pb2.ReadResponse(data=data).SerializeToString()
    assert encode_read_response(data) == expected
    assert encode_read_response(memoryview(data)) == expected
    assert bs_pb2.ReadResponse.FromString(encode_read_response(data)).data == data


def blobs(sizes: list[int]) -> list[tuple[re_pb2.Digest, bytes]]:
    out = []
    for size in sizes:
        data = os.urandom(size)
        out.append((Digest.of(data).to_proto(), data))
    # A digest whose size needs several varint bytes, and one of another function.
    out.append((re_pb2.Digest(hash="ab" * 32, size_bytes=(1 << 40) + 3), b"z"))
    out.append((Digest.of(b"b3", re_pb2.DigestFunction.BLAKE3).to_proto(), b"b3"))
    return out


@pytest.mark.parametrize("count", [1, 2, 1000])
def test_batch_update_responses_match_the_message_class(count: int) -> None:
    digests = [d for d, _ in blobs([100 + i for i in range(count)])]
    Response = re_pb2.BatchUpdateBlobsResponse.Response
    expected = re_pb2.BatchUpdateBlobsResponse(responses=[Response(digest=d) for d in digests])
    assert encode_batch_update_response(digests) == expected.SerializeToString()
    assert encode_batch_update_response([]) == b""


@pytest.mark.parametrize("sizes", [[1], [1024] * 1000, [1, 127, 128, 16_383, 16_384, 1 << 20]])
def test_batch_read_responses_match_the_message_class(sizes: list[int]) -> None:
    pairs = blobs(sizes)
    Response = re_pb2.BatchReadBlobsResponse.Response
    expected = re_pb2.BatchReadBlobsResponse(responses=[Response(digest=d, data=data) for d, data in pairs])
    encoded = encode_batch_read_response([d for d, _ in pairs], [data for _, data in pairs])
    assert encoded == expected.SerializeToString()


def test_a_batch_read_with_an_empty_blob_is_left_to_the_message_class() -> None:
    empty = Digest.of(b"").to_proto()
    assert encode_batch_read_response([empty], [b""]) is None


def test_the_serializer_passes_encoded_bytes_and_serializes_messages() -> None:
    serialize = passing_bytes(bs_pb2.ReadResponse.SerializeToString)
    encoded = encode_read_response(b"chunk")
    assert serialize(encoded) is encoded
    message = bs_pb2.ReadResponse(data=b"log line\n")
    assert serialize(message) == message.SerializeToString()


def test_register_refuses_an_add_function_that_registers_no_method_table() -> None:
    def add_nothing(servicer: object, server: object) -> None:
        pass

    with pytest.raises(RuntimeError, match="add_nothing registered no method table"):
        register(add_nothing, object(), object(), ["Read"])  # type: ignore[arg-type]


def test_register_keeps_the_other_methods_serializers() -> None:
    tables: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    class Recorder:
        def add_generic_rpc_handlers(self, handlers: object) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
            tables[service] = handlers

    register(bs_grpc.add_ByteStreamServicer_to_server, bs_grpc.ByteStreamServicer(), Recorder(), ["Read"])  # type: ignore[arg-type]
    table = tables["google.bytestream.ByteStream"]
    assert table["Read"].response_serializer(b"as is") == b"as is"
    assert table["Write"].response_serializer is bs_pb2.WriteResponse.SerializeToString
