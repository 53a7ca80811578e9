"""Responses the server encodes by hand, where building messages costs more than the call.

Three answers are mostly bytes the server already holds, and building them through the
message classes costs more CPU than the rest of the call:
- a ByteStream ``ReadResponse`` (one field, ``data``): through the class, each chunk
  is copied into the message and again when serialized; a 64 MiB read spent about a
  fifth of its server CPU there (now the store puts each chunk behind its header,
  ``read_response_header``, joining it only if it must: ``read_framed``);
- a ``BatchReadBlobsResponse`` of 1,000 small blobs: one message object per blob, and
  serializing 1 MB of them took longer than everything else the call did;
- a ``BatchUpdateBlobsResponse`` where every blob was stored: one digest per entry.
The wire form is simple (a tag, a varint length, the bytes), so these are joined in
whole-list passes with one copy of the data. Each digest in them is the client's own
Digest message, serialized, as FindMissingBlobs echoes it. Answers with any error,
status or compressed entry are still built as messages.

``register`` adds a generated servicer with response serializers that pass such bytes
through untouched and serialize messages as before (and, for the methods it is given
decoders for, request deserializers of their own: ByteStream.Write's). tests/server/test_encoded_responses.py
holds every encoding to the message classes' own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, repeat
from operator import add, methodcaller
from typing import Any

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

_SERIALIZE = methodcaller("SerializeToString")
# Tags: (field number << 3) | 2, length-delimited.
_FIELD_1 = b"\n"
_FIELD_2 = b"\x12"
_READ_DATA = b"R"  # ReadResponse.data is field 10
_SIZE_TAG = b"\x10"  # Digest.size_bytes: field 2, a varint


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_varint(n) for n in range(1 << 14)]  # lengths under 16 KiB: a lookup each


def _varints(values: list[int]) -> list[bytes]:
    if max(values, default=0) < len(_SMALL_VARINTS):
        return list(map(_SMALL_VARINTS.__getitem__, values))
    return list(map(_varint, values))


def _lengths(parts: Iterable[bytes]) -> list[int]:
    return list(map(len, parts))


def read_response_header(size: int) -> bytes:
    """What comes before ``size`` bytes of data in a serialized ``ReadResponse``: its
    field's tag and length (nothing for no data: proto3 leaves an empty field out).
    The frame of a store's ``read_framed`` (cas/store.py), which puts the data behind
    it as it reads, so the answer needs no join."""
    return b"".join((_READ_DATA, _varint(size))) if size else b""


def encode_read_response(data: bytes | memoryview) -> bytes:
    """The serialized ``ReadResponse(data=data)``, byte for byte."""
    if not data:
        return b""  # proto3 leaves an empty field out
    return b"".join((_READ_DATA, _varint(len(data)), data))


def encode_batch_update_response(digests: Sequence[re_pb2.Digest]) -> bytes:
    """``BatchUpdateBlobsResponse`` with one entry per digest, each stored (status OK)."""
    serialized = list(map(_SERIALIZE, digests))
    sizes = _lengths(serialized)
    header = _varints(sizes)
    entries = _varints(list(map(add, map(add, sizes, _lengths(header)), repeat(1))))
    return b"".join(chain.from_iterable(zip(repeat(_FIELD_1), entries, repeat(_FIELD_1), header, serialized)))


def encode_batch_read_response(digests: Sequence[re_pb2.Digest], datas: Sequence[bytes]) -> bytes | None:
    """``BatchReadBlobsResponse`` answering each digest with its data (status OK,
    uncompressed); None if a blob is empty (the message class leaves its field out)."""
    return _encode_read_entries(list(map(_SERIALIZE, digests)), datas)


def encode_blobs(hashes: Sequence[str], datas: Sequence[bytes]) -> bytes | None:
    """``BatchReadBlobsResponse`` of blobs named by their hashes (hex; each one's size is
    its data's), as ``encode_batch_read_response``: a lease's inline blobs."""
    encoded = list(map(str.encode, hashes))
    sizes = _lengths(datas)
    serialized = list(map(b"".join, zip(repeat(_FIELD_1), _varints(_lengths(encoded)), encoded,
                                        repeat(_SIZE_TAG), _varints(sizes))))
    return _encode_read_entries(serialized, datas)


def _encode_read_entries(serialized: list[bytes], datas: Sequence[bytes]) -> bytes | None:
    data_sizes = _lengths(datas)
    if 0 in data_sizes:
        return None
    digest_sizes = _lengths(serialized)
    digest_header = _varints(digest_sizes)
    data_header = _varints(data_sizes)
    digest_part = map(add, digest_sizes, _lengths(digest_header))
    data_part = map(add, data_sizes, _lengths(data_header))
    entries = _varints(list(map(add, map(add, digest_part, data_part), repeat(2))))  # + the two tags
    return b"".join(
        chain.from_iterable(
            zip(repeat(_FIELD_1), entries, repeat(_FIELD_1), digest_header, serialized, repeat(_FIELD_2), data_header, datas)
        )
    )


def passing_bytes(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that sends hand-encoded bytes as they are."""

    def serialize(response: Any) -> bytes:
        if type(response) is bytes:
            return response
        return serializer(response)

    return serialize


class _Registration:
    """Stands in for the server while a generated ``add_*Servicer_to_server`` runs, and
    registers its method table with pass-through serializers for ``methods``."""

    def __init__(
        self, server: grpc.aio.Server, methods: frozenset[str], decoders: Mapping[str, Callable[[bytes], Any]]
    ) -> None:
        self.server = server
        self.methods = methods
        self.decoders = decoders
        self.registered = False

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # made again below from the rewritten method table

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        rewritten = {}
        for name, handler in handlers.items():
            if name in self.methods:
                handler = handler._replace(response_serializer=passing_bytes(handler.response_serializer))
            if name in self.decoders:
                handler = handler._replace(request_deserializer=self.decoders[name])
            rewritten[name] = handler
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, rewritten),))
        self.server.add_registered_method_handlers(service, rewritten)  # type: ignore[attr-defined]
        self.registered = True


def register(
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    server: grpc.aio.Server,
    methods: Iterable[str],
    decoders: Mapping[str, Callable[[bytes], Any]] | None = None,
) -> None:
    """``add_to_server(servicer, server)``, but ``methods`` may answer with hand-encoded
    bytes, and the methods in ``decoders`` get their requests from those functions
    (hand decoders, e.g. server/write_requests.py) instead of the message classes."""
    registration = _Registration(server, frozenset(methods), decoders or {})
    add_to_server(servicer, registration)
    if not registration.registered:
        raise RuntimeError(f"{add_to_server.__name__} registered no method table")
