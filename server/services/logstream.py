"""LogStream service (CreateLogStream) and the ByteStream side of log streams.

Reads and writes of log streams arrive on the ByteStream service, like blobs. The
ByteStream service hands a request to ``LogStreamByteStream`` when ``owns`` says
the resource name is a log stream's (the names are distinct from every blob name;
see server/logstreams.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import grpc

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2 as logstream_pb2
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2_grpc as logstream_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server import boundary
from server.logstreams import LogStreams


class LogStreamService(logstream_grpc.LogStreamServiceServicer):
    def __init__(self, streams: LogStreams) -> None:
        self.streams = streams

    @boundary.unary
    async def CreateLogStream(
        self, request: logstream_pb2.CreateLogStreamRequest, context: grpc.aio.ServicerContext
    ) -> logstream_pb2.LogStream:
        parent = request.parent.strip("/")
        name, write_name = await self.streams.open(parent)
        return logstream_pb2.LogStream(name=name, write_resource_name=write_name)


class LogStreamByteStream:
    """ByteStream Read/Write/QueryWriteStatus for log stream resource names."""

    def __init__(self, streams: LogStreams) -> None:
        self.streams = streams

    def owns(self, resource_name: str) -> bool:
        return self.streams.owns(resource_name)

    async def read(self, request: bs_pb2.ReadRequest) -> AsyncIterator[bs_pb2.ReadResponse]:
        async for chunk in self.streams.read(request.resource_name, request.read_offset, request.read_limit):
            yield bs_pb2.ReadResponse(data=chunk)

    async def write(
        self, first: bs_pb2.WriteRequest, rest: AsyncIterable[bs_pb2.WriteRequest]
    ) -> bs_pb2.WriteResponse:
        """Append each request's data in order; ``first`` carries the resource name."""
        name = first.resource_name
        committed = await self.streams.write(name, first.write_offset, first.data, first.finish_write)
        finished = first.finish_write
        async for request in rest:
            if finished:
                raise InvalidArgument("log stream write: a request came after finish_write")
            if request.resource_name and request.resource_name != first.resource_name:
                raise InvalidArgument(
                    f"log stream write: resource_name changed mid-stream to {request.resource_name!r}"
                )
            committed = await self.streams.write(name, request.write_offset, request.data, request.finish_write)
            finished = request.finish_write
        return bs_pb2.WriteResponse(committed_size=committed)

    async def query_write_status(self, request: bs_pb2.QueryWriteStatusRequest) -> bs_pb2.QueryWriteStatusResponse:
        committed, complete = await self.streams.status(request.resource_name)
        return bs_pb2.QueryWriteStatusResponse(committed_size=committed, complete=complete)
