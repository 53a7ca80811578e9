"""The hand decoder of ByteStream WriteRequests, held to the message class, and over real gRPC."""

from __future__ import annotations

import os
import random

import grpc
import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.app import ReapiServer
from server.resource_names import upload_name
from server.write_requests import DecodedWrite, decode_write_request
from tests.server.client import StorageClient
from tests.support.servers import channel_to


def fields(decoded: DecodedWrite) -> tuple[str, int, bool, bytes]:
    return decoded.resource_name, decoded.write_offset, decoded.finish_write, bytes(decoded.data)


def same_as_class(raw: bytes) -> DecodedWrite:
    """Decode ``raw`` by hand and check every field against the message class's parse."""
    decoded = decode_write_request(raw)
    message = bs_pb2.WriteRequest.FromString(raw)
    assert fields(decoded) == (message.resource_name, message.write_offset, message.finish_write, message.data)
    return decoded


NAME = "uploads/5f0c/blobs/" + "a" * 64 + "/1048576"


@pytest.mark.parametrize(
    "message",
    [
        bs_pb2.WriteRequest(),
        bs_pb2.WriteRequest(data=b"x"),
        bs_pb2.WriteRequest(resource_name=NAME, write_offset=0, data=os.urandom(1 << 20)),
        bs_pb2.WriteRequest(write_offset=(1 << 20) * 63, data=os.urandom(100_000), finish_write=True),
        bs_pb2.WriteRequest(write_offset=(1 << 62) + 5),  # a 9-byte varint: still the fast path
        bs_pb2.WriteRequest(finish_write=True),
        bs_pb2.WriteRequest(resource_name="uploads/ü/blobs/é/1", data=b"\x00" * 300),
        bs_pb2.WriteRequest(resource_name=NAME, finish_write=True, data=b"\x80" * 128),  # length varint of 2 bytes
    ],
)
def test_usual_messages_decode_as_the_class_does(message: bs_pb2.WriteRequest) -> None:
    raw = message.SerializeToString()
    decoded = same_as_class(raw)
    if message.data:
        # The data is a view of the received bytes, not a copy.
        assert isinstance(decoded.data, memoryview) and decoded.data.obj is raw
    else:
        assert decoded.data == b""


def test_random_messages_decode_as_the_class_does() -> None:
    rng = random.Random(13)
    for _ in range(500):
        message = bs_pb2.WriteRequest(
            resource_name=rng.choice(["", NAME, "x" * rng.randrange(300)]),
            write_offset=rng.choice([0, rng.randrange(1 << 7), rng.randrange(1 << 35), -rng.randrange(1, 1 << 40)]),
            finish_write=rng.random() < 0.5,
            data=rng.randbytes(rng.choice([0, 1, rng.randrange(200), rng.randrange(70_000)])),
        )
        same_as_class(message.SerializeToString())


def test_negative_offsets_and_other_rare_forms_go_to_the_class() -> None:
    # A negative int64 is a 10-byte varint; the class gives the same answer as always.
    assert same_as_class(bs_pb2.WriteRequest(write_offset=-1).SerializeToString()).write_offset == -1
    data = b"payload"
    # Fields out of order, repeated (the last wins), an explicit empty data field.
    raw = b"R" + bytes([len(data)]) + data + b"\x10\x05" + b"\x10\x07" + b"\x18\x00" + b"\n\x01a" + b"\n\x01b"
    assert fields(same_as_class(raw)) == ("b", 7, False, data)
    assert fields(same_as_class(b"R\x00")) == ("", 0, False, b"")
    # finish_write as a varint other than 1 is still true.
    assert same_as_class(b"\x18\x02").finish_write is True


def test_unknown_fields_and_unexpected_wire_types_are_left_to_the_class() -> None:
    data = b"abc"
    unknown_varint = b"\x20\x01"  # field 4, varint
    unknown_bytes = b"\x2a\x02hi"  # field 5, length-delimited
    high_field = b"\xa2\x06\x01z"  # field 100: a two-byte tag
    fixed64 = b"\x31" + b"\x00" * 8  # field 6, 64-bit
    for extra in (unknown_varint, unknown_bytes, high_field, fixed64):
        raw = b"\x10\x03" + extra + b"R" + bytes([len(data)]) + data
        decoded = same_as_class(raw)
        assert bytes(decoded.data) == data and decoded.write_offset == 3
    # write_offset sent as a length-delimited field is an unknown field to the class too.
    same_as_class(b"\x12\x01x" + b"R\x01y")


@pytest.mark.parametrize(
    "raw",
    [
        b"R\x05abc",  # data shorter than its length says
        b"R",  # a tag and nothing more
        b"\x10\x80",  # a varint cut off
        b"\n\x02\xff\xfe",  # a resource name that is not UTF-8
        b"\x10" + b"\xff" * 11,  # a varint longer than 10 bytes
        b"\x07",  # wire type 7 does not exist
    ],
)
def test_malformed_bytes_are_invalid_argument(raw: bytes) -> None:
    with pytest.raises(InvalidArgument, match=f"a WriteRequest of {len(raw)} bytes does not parse"):
        decode_write_request(raw)


def test_to_message_gives_the_class_form() -> None:
    message = bs_pb2.WriteRequest(resource_name=NAME, write_offset=9, finish_write=True, data=b"123")
    assert decode_write_request(message.SerializeToString()).to_message() == message


async def test_a_malformed_write_request_is_invalid_argument_over_grpc(storage_server: ReapiServer) -> None:
    """Sent as raw bytes, a WriteRequest that does not parse is refused with a message that says so."""
    async with channel_to(storage_server) as channel:
        write = channel.stream_unary("/google.bytestream.ByteStream/Write", request_serializer=None)

        async def requests():  # type: ignore[no-untyped-def]
            yield b"R\x05abc"

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await write(requests())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not parse" in (caught.value.details() or "")


async def test_an_upload_decoded_by_hand_is_stored_and_read_back(client: StorageClient) -> None:
    """Large messages, as the benchmark and Bazel send, through the decoder and the store."""
    data = os.urandom(5 << 20)
    digest = Digest.of(data)
    name = upload_name("", "7d3f", digest)
    chunk = 1 << 20

    async def requests():  # type: ignore[no-untyped-def]
        for offset in range(0, len(data), chunk):
            yield bs_pb2.WriteRequest(
                resource_name=name if offset == 0 else "", write_offset=offset,
                data=data[offset : offset + chunk], finish_write=offset + chunk >= len(data),
            )

    assert (await client.bytestream.Write(requests())).committed_size == len(data)
    assert await client.read(digest) == data
    assert await client.read(digest, offset=chunk - 7, limit=2 * chunk + 11) == data[chunk - 7 : 3 * chunk + 4]
