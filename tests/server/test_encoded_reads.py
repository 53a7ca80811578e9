"""Hand-encoded ReadResponses are byte for byte what the message class makes."""

from __future__ import annotations

import pytest

from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.encoded_reads import encode_read_response, serialize_read_response


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 20, (4 << 20) - 5, 5 << 20])
def test_encoding_matches_the_message_class(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = bs_pb2.ReadResponse(data=data).SerializeToString()
    assert encode_read_response(data) == expected
    assert encode_read_response(memoryview(data)) == expected
    assert bs_pb2.ReadResponse.FromString(encode_read_response(data)).data == data


def test_the_serializer_passes_encoded_bytes_and_serializes_messages() -> None:
    encoded = encode_read_response(b"chunk")
    assert serialize_read_response(encoded) is encoded
    message = bs_pb2.ReadResponse(data=b"log line\n")
    assert serialize_read_response(message) == message.SerializeToString()
