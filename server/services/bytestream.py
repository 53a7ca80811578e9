"""ByteStream: streamed reads and resumable writes of CAS blobs, translated.

Read streams a blob from the instance's CAS in the store's bounded chunks, each a
hand-encoded ReadResponse the store reads its chunk into (``read_framed``,
cas/store.py; server/encoded_responses.py), or, for
``compressed-blobs/{compressor}/...``, its compressed form (cas/compression/forms.py:
compressed on the way out, the often-read forms kept). Write and QueryWriteStatus
hand their messages to server/uploads.py, which holds the resumable-upload protocol
(offsets, resumption, the one-message fast path, decompression of compressed
uploads); the store write verifies size and hash as the bytes arrive. Write's messages
are decoded by hand (server/write_requests.py), so an upload's data reaches the store
as views of the bytes gRPC received, uncopied. Resource names
are parsed by server/resource_names.py; live log streams (server/logstreams.py)
share the service under names that never parse as blobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from cas.compression.codecs import IDENTITY, Codec, Codecs
from cas.compression.forms import CompressedForms
from cas.errors import InvalidArgument, OutOfRange
from cas.store import closing
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server import boundary
from server.encoded_responses import encode_read_response, read_response_header
from server.instances import InstanceRegistry
from server.resource_names import parse_download, parse_upload
from server.uploads import UploadKey, UploadRegistry, WriteMessage
from server.write_requests import DecodedWrite

if TYPE_CHECKING:
    from server.services.logstream import LogStreamByteStream

def _as_message(request: WriteMessage) -> bs_pb2.WriteRequest:
    return request.to_message() if isinstance(request, DecodedWrite) else request  # type: ignore[return-value]


class ByteStreamService(bs_grpc.ByteStreamServicer):
    def __init__(
        self,
        instances: InstanceRegistry,
        uploads: UploadRegistry,
        logstreams: LogStreamByteStream | None = None,
        codecs: Codecs | None = None,
        forms: CompressedForms | None = None,
    ) -> None:
        self.instances = instances
        self.uploads = uploads
        # Live log streams (server/logstreams.py) share ByteStream; their names never parse as blobs.
        self.logstreams = logstreams
        self.codecs = codecs if codecs is not None else Codecs([])
        self.forms = forms if forms is not None else CompressedForms()

    def _codec(self, compressor: int, resource_name: str) -> Codec | None:
        """The codec a compressed-blobs name asks for (None for plain blobs)."""
        if compressor == IDENTITY:
            return None
        return self.codecs.require(compressor, f"resource name {resource_name!r}")

    @boundary.streaming
    async def Read(
        self, request: bs_pb2.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bs_pb2.ReadResponse | bytes]:
        if self.logstreams is not None and self.logstreams.owns(request.resource_name):
            async for log_response in self.logstreams.read(request):
                yield log_response
            return
        resource = parse_download(request.resource_name)
        cas = self.instances.get(resource.instance_name).cas
        codec = self._codec(resource.compressor, request.resource_name)
        if request.read_offset < 0:
            raise OutOfRange(f"read_offset {request.read_offset} is negative")
        if request.read_limit < 0:
            raise OutOfRange(f"read_limit {request.read_limit} is negative")
        if codec is not None:
            if request.read_limit:
                raise InvalidArgument(
                    f"read_limit {request.read_limit}: a compressed read takes no limit (REv2: it must be 0)"
                )
            async for chunk in self.forms.read(cas, resource.digest, codec, request.read_offset):
                yield encode_read_response(chunk)
            return
        framed = cas.read_framed(resource.digest, read_response_header, request.read_offset, request.read_limit or None)
        async with closing(framed):
            async for response, _ in framed:
                yield response

    @boundary.unary
    async def Write(
        self, request_iterator: AsyncIterator[WriteMessage], context: grpc.aio.ServicerContext
    ) -> bs_pb2.WriteResponse:
        # Served, the messages come decoded by hand (server/write_requests.py), their data
        # a view of what gRPC received; called in-process they may be WriteRequests.
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidArgument("the Write stream carried no WriteRequest")
        if self.logstreams is not None and self.logstreams.owns(first.resource_name):
            return await self.logstreams.write(_as_message(first), (_as_message(r) async for r in requests))
        resource = parse_upload(first.resource_name)
        cas = self.instances.get(resource.instance_name).cas
        codec = self._codec(resource.compressor, first.resource_name)
        key = UploadKey(resource.instance_name, resource.upload_id, resource.digest)
        return bs_pb2.WriteResponse(committed_size=await self.uploads.write(cas, key, first, requests, codec))

    @boundary.unary
    async def QueryWriteStatus(
        self, request: bs_pb2.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> bs_pb2.QueryWriteStatusResponse:
        if self.logstreams is not None and self.logstreams.owns(request.resource_name):
            return await self.logstreams.query_write_status(request)
        resource = parse_upload(request.resource_name)
        cas = self.instances.get(resource.instance_name).cas
        self._codec(resource.compressor, request.resource_name)
        status = await self.uploads.status(cas, UploadKey(resource.instance_name, resource.upload_id, resource.digest))
        return bs_pb2.QueryWriteStatusResponse(committed_size=status.committed_size, complete=status.complete)
