"""ByteStream: streamed reads and resumable writes of CAS blobs.

Read streams a blob from the instance's CAS in the store's bounded chunks. Write
feeds an upload (server/uploads.py) whose store write verifies size and hash as the
bytes arrive; a blob that already exists finishes at once with its full size, as
REv2 allows, so concurrent writers of one blob cost little. Resource names are
parsed by server/resource_names.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from cas.errors import Aborted, InvalidArgument, OutOfRange
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server import boundary
from server.instances import InstanceRegistry
from server.resource_names import UploadResource, parse_download, parse_upload
from server.uploads import UploadKey, UploadRegistry

if TYPE_CHECKING:
    from server.services.logstream import LogStreamByteStream

log = logging.getLogger("reapi.server.bytestream")


class ByteStreamService(bs_grpc.ByteStreamServicer):
    def __init__(
        self, instances: InstanceRegistry, uploads: UploadRegistry, logstreams: LogStreamByteStream | None = None
    ) -> None:
        self.instances = instances
        self.uploads = uploads
        # Live log streams (server/logstreams.py) share ByteStream; their names never parse as blobs.
        self.logstreams = logstreams

    @boundary.streaming
    async def Read(
        self, request: bs_pb2.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bs_pb2.ReadResponse]:
        if self.logstreams is not None and self.logstreams.owns(request.resource_name):
            async for log_response in self.logstreams.read(request):
                yield log_response
            return
        resource = parse_download(request.resource_name)
        cas = self.instances.get(resource.instance_name).cas
        if request.read_offset < 0:
            raise OutOfRange(f"read_offset {request.read_offset} is negative")
        if request.read_limit < 0:
            raise OutOfRange(f"read_limit {request.read_limit} is negative")
        response = bs_pb2.ReadResponse
        async for chunk in cas.read(resource.digest, request.read_offset, request.read_limit or None):
            yield response(data=chunk)

    @boundary.unary
    async def Write(
        self, request_iterator: AsyncIterator[bs_pb2.WriteRequest], context: grpc.aio.ServicerContext
    ) -> bs_pb2.WriteResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidArgument("the Write stream carried no WriteRequest")
        if self.logstreams is not None and self.logstreams.owns(first.resource_name):
            return await self.logstreams.write(first, requests)
        resource = parse_upload(first.resource_name)
        return await self._write_blob(resource, first, requests)

    async def _write_blob(
        self, resource: UploadResource, first: bs_pb2.WriteRequest, rest: AsyncIterator[bs_pb2.WriteRequest]
    ) -> bs_pb2.WriteResponse:
        digest = resource.digest
        cas = self.instances.get(resource.instance_name).cas
        key = UploadKey(resource.instance_name, resource.upload_id, digest)
        if await cas.has(digest):
            # Already stored (perhaps by a concurrent writer): done, with the full size.
            log.debug("upload %s of %s: already stored", resource.upload_id, digest)
            self.uploads.discard(key)
            return bs_pb2.WriteResponse(committed_size=digest.size_bytes)
        if first.finish_write and first.write_offset == 0:
            data = first.data
            if len(data) == digest.size_bytes:
                # The whole blob in one message (small blobs: most uploads): stored in one
                # store call, without an Upload's task and pipe. It replaces any earlier
                # partial upload under this name, as a restart at offset 0 would.
                if self.uploads.get(key) is not None:
                    self.uploads.discard(key, Aborted(f"upload {resource.upload_id} of {digest} was restarted from offset 0"))
                await cas.put_bytes(digest, data)
                log.debug("stored %s from upload %s (one message)", digest, resource.upload_id)
                return bs_pb2.WriteResponse(committed_size=digest.size_bytes)
        # From here to attach() nothing awaits, so the offset check cannot go stale.
        upload = self.uploads.get(key)
        committed = upload.received if upload is not None else 0
        if first.write_offset != committed and first.write_offset != 0:
            raise InvalidArgument(
                f"write_offset {first.write_offset} does not match the {committed} bytes committed so far "
                f"for upload {resource.upload_id} of {digest} (ask QueryWriteStatus, or start again at 0)"
            )
        if upload is None or first.write_offset == 0 and committed:
            upload = self.uploads.start(key, cas)
        owner = object()
        upload.attach(owner, self.uploads.clock())
        try:
            request = first
            while True:
                if request.resource_name and request.resource_name != first.resource_name:
                    raise InvalidArgument(
                        f"resource_name changed within one Write stream: {request.resource_name!r} "
                        f"after {first.resource_name!r}"
                    )
                if request.write_offset != upload.received:
                    raise InvalidArgument(
                        f"write_offset {request.write_offset} does not follow the {upload.received} bytes "
                        f"received so far for {digest}"
                    )
                data = request.data
                if data:
                    if upload.received + len(data) > digest.size_bytes:
                        raise InvalidArgument(
                            f"digest size {digest.size_bytes} does not match the data: {upload.received + len(data)} "
                            f"bytes received for {digest.hash}"
                        )
                    await upload.feed(owner, data)
                if request.finish_write:
                    if upload.received != digest.size_bytes:
                        raise InvalidArgument(
                            f"finish_write after {upload.received} bytes, but digest {digest} says "
                            f"{digest.size_bytes} bytes"
                        )
                    try:
                        await upload.finish(owner)
                    finally:
                        if not upload.alive:
                            self.uploads.forget(upload)
                    log.debug("stored %s from upload %s", digest, resource.upload_id)
                    return bs_pb2.WriteResponse(committed_size=digest.size_bytes)
                following: bs_pb2.WriteRequest | None = await anext(rest, None)  # type: ignore[arg-type]
                if following is None:
                    raise InvalidArgument(
                        f"the Write stream for {digest} ended after {upload.received} bytes without finish_write "
                        "(the upload is kept: ask QueryWriteStatus and resume)"
                    )
                request = following
        finally:
            upload.detach(owner, self.uploads.clock())

    @boundary.unary
    async def QueryWriteStatus(
        self, request: bs_pb2.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> bs_pb2.QueryWriteStatusResponse:
        if self.logstreams is not None and self.logstreams.owns(request.resource_name):
            return self.logstreams.query_write_status(request)
        resource = parse_upload(request.resource_name)
        cas = self.instances.get(resource.instance_name).cas
        digest = resource.digest
        if await cas.has(digest):
            return bs_pb2.QueryWriteStatusResponse(committed_size=digest.size_bytes, complete=True)
        upload = self.uploads.get(UploadKey(resource.instance_name, resource.upload_id, digest))
        # An unknown upload has nothing committed: the client starts again at 0.
        return bs_pb2.QueryWriteStatusResponse(committed_size=upload.received if upload else 0, complete=False)
