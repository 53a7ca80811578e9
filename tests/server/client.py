"""A small REAPI storage client for the service tests, over a real grpc.aio channel."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.resource_names import download_name, upload_name


def memory_stores(cas_size: str = "256MiB", ac_size: str = "64MiB") -> dict[str, dict[str, Any]]:
    """A verified memory CAS and a memory AC."""
    return {
        "cas-memory": {"type": "memory", "max_size": cas_size},
        "cas": {"type": "verify", "inner": "cas-memory"},
        "ac": {"type": "memory", "max_size": ac_size},
    }


# grpcio's asyncio client can lose the server's status of a client-streaming call the
# server ends early (it answers while requests are still being written): a write that
# fails after the end replaces the status with this INTERNAL (grpc/grpc#36066; the
# sync API and other languages' clients keep the server's). Bazel's Java client is not
# affected; for our Python test client the call is made again.
_LOST_STATUS = 'Failed "execute_batch"'
_ATTEMPTS = 20


async def expect_error(call: Any, code: grpc.StatusCode) -> str:
    """Await ``call``; assert it fails with ``code``; return the status message. ``call``
    may be a function making the call (a client-streaming one, such as a ByteStream
    Write the server refuses part-way): it is made again while grpcio loses the status."""
    for _ in range(_ATTEMPTS):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await (call() if callable(call) else call)
        lost = info.value.code() == grpc.StatusCode.INTERNAL and _LOST_STATUS in (info.value.debug_error_string() or "")
        if not (lost and callable(call)):
            break
    assert info.value.code() == code, f"expected {code.name}, got {info.value.code().name}: {info.value.details()}"
    details = info.value.details() or ""
    assert details, "the status carries no message"
    return details


def write_requests(
    name: str, data: bytes, chunk: int = 64 << 10, offset: int = 0, finish: bool = True
) -> list[bs_pb2.WriteRequest]:
    """WriteRequests carrying ``data`` from ``offset``; the name only on the first."""
    requests = []
    position = offset
    for start in range(0, len(data), chunk) or [0]:
        piece = data[start : start + chunk]
        requests.append(bs_pb2.WriteRequest(write_offset=position, data=piece))
        position += len(piece)
    requests[0].resource_name = name
    requests[-1].finish_write = finish
    return requests


async def stream(requests: Iterable[Any]) -> AsyncIterator[Any]:
    for request in requests:
        yield request


class StorageClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)
        self.ac = re_grpc.ActionCacheStub(channel)
        self.capabilities = re_grpc.CapabilitiesStub(channel)

    async def upload(self, data: bytes, instance: str = "", function: re_pb2.DigestFunction.Value = re_pb2.DigestFunction.SHA256) -> Digest:
        """Store ``data`` with BatchUpdateBlobs; assert it was accepted."""
        digest = Digest.of(data, function)
        response = await self.cas.BatchUpdateBlobs(
            re_pb2.BatchUpdateBlobsRequest(
                instance_name=instance,
                requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest.to_proto(), data=data)],
                digest_function=function,
            )
        )
        assert response.responses[0].status.code == 0, response.responses[0].status.message
        return digest

    async def write(self, data: bytes, instance: str = "", digest: Digest | None = None, chunk: int = 64 << 10) -> bs_pb2.WriteResponse:
        digest = digest or Digest.of(data)
        name = upload_name(instance, str(uuid.uuid4()), digest)
        return await self.bytestream.Write(stream(write_requests(name, data, chunk)))

    async def read(self, digest: Digest, instance: str = "", offset: int = 0, limit: int = 0) -> bytes:
        request = bs_pb2.ReadRequest(resource_name=download_name(instance, digest), read_offset=offset, read_limit=limit)
        return b"".join([response.data async for response in self.bytestream.Read(request)])

    async def missing(self, digests: Iterable[Digest], instance: str = "") -> set[Digest]:
        response = await self.cas.FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(instance_name=instance, blob_digests=[d.to_proto() for d in digests])
        )
        return {Digest.from_proto(d) for d in response.missing_blob_digests}
