"""ByteStream WriteRequests decoded by hand, their data left a view of the bytes gRPC received.

An upload of a large blob arrives as many ~1 MiB WriteRequests. Through the message
class each one's data was copied twice more after gRPC handed over the message's
bytes: into the parsed message, and out of it again when ``.data`` was read; on a
64 MiB upload, with the page faults of fresh buffers, that was a large share of the
server's CPU. The wire form of the usual message is simple (fields 1, 2, 3 and 10,
each a one-byte tag), so ``decode_write_request`` reads it directly and gives the
data as a ``memoryview`` of the received bytes: no copy at all until the store keeps
it.

Anything else in a message (an unknown field, a known field with an unexpected wire
type, a varint too long for the fast path, a name that is not UTF-8) is left to the
message class, so the answer is exactly the class's, and bytes that do not parse
are INVALID_ARGUMENT instead of gRPC's generic failure.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from cas.errors import InvalidArgument
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2

# One-byte tags: (field number << 3) | wire type.
_NAME = 0x0A  # resource_name, 1, length-delimited
_OFFSET = 0x10  # write_offset, 2, varint
_FINISH = 0x18  # finish_write, 3, varint
_DATA = 0x52  # data, 10, length-delimited
# The fast path reads varints of up to 9 bytes (values under 2**63); longer ones
# (a negative int64 takes 10) go to the message class.
_MAX_VARINT_BYTES = 9


class DecodedWrite:
    """One WriteRequest's fields; ``data`` is a view of the received message when it came by hand."""

    __slots__ = ("resource_name", "write_offset", "finish_write", "data")

    def __init__(self, resource_name: str, write_offset: int, finish_write: bool, data: bytes | memoryview) -> None:
        self.resource_name = resource_name
        self.write_offset = write_offset
        self.finish_write = finish_write
        self.data = data

    def to_message(self) -> bs_pb2.WriteRequest:
        """The message class's form (for handlers that want one, e.g. live log streams)."""
        return bs_pb2.WriteRequest(
            resource_name=self.resource_name,
            write_offset=self.write_offset,
            finish_write=self.finish_write,
            data=bytes(self.data),
        )


class _Unusual(Exception):
    """The message needs the message class (see the module doc)."""


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = 0
    shift = 0
    end = min(len(raw), pos + _MAX_VARINT_BYTES)
    while pos < end:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Unusual


def _fast(raw: bytes) -> DecodedWrite:
    name = ""
    offset = 0
    finish = False
    data: bytes | memoryview = b""
    pos = 0
    end = len(raw)
    while pos < end:
        tag = raw[pos]
        pos += 1
        if tag == _DATA or tag == _NAME:
            length, pos = _varint(raw, pos)
            stop = pos + length
            if stop > end:
                raise _Unusual
            if tag == _DATA:
                data = memoryview(raw)[pos:stop] if length else b""
            else:
                try:
                    name = raw[pos:stop].decode()
                except UnicodeDecodeError:
                    raise _Unusual from None
            pos = stop
        elif tag == _OFFSET:
            offset, pos = _varint(raw, pos)
        elif tag == _FINISH:
            value, pos = _varint(raw, pos)
            finish = value != 0
        else:
            raise _Unusual
    return DecodedWrite(name, offset, finish, data)


def _by_class(raw: bytes) -> DecodedWrite:
    try:
        message = bs_pb2.WriteRequest.FromString(raw)
    except DecodeError as err:
        raise InvalidArgument(f"a WriteRequest of {len(raw)} bytes does not parse: {err}") from None
    return DecodedWrite(message.resource_name, message.write_offset, message.finish_write, message.data)


def decode_write_request(raw: bytes) -> DecodedWrite:
    """The request deserializer of ByteStream.Write (``raw`` is the message's bytes)."""
    try:
        return _fast(raw)
    except _Unusual:
        return _by_class(raw)
