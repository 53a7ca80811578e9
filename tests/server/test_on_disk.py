"""The storage services over the zero-config server (on-disk CAS and AC), end to end."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.app import ReapiServer
from server.resource_names import upload_name
from tests.server.client import StorageClient, expect_error, stream, write_requests


@pytest.fixture
async def disk_client(channel: grpc.aio.Channel) -> AsyncIterator[StorageClient]:
    yield StorageClient(channel)


async def test_bytestream_round_trip_and_resume_on_disk(disk_client: StorageClient, server: ReapiServer) -> None:
    data = os.urandom(5 << 20)
    digest = Digest.of(data)
    name = upload_name("some/instance", str(uuid.uuid4()), digest)
    requests = write_requests(name, data, chunk=1 << 20)
    await expect_error(lambda: disk_client.bytestream.Write(stream(requests[:3])), grpc.StatusCode.INVALID_ARGUMENT)
    status = await disk_client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert status.committed_size == 3 << 20
    requests[3].resource_name = name
    assert (await disk_client.bytestream.Write(stream(requests[3:]))).committed_size == len(data)
    assert await disk_client.read(digest, instance="some/instance") == data
    assert await disk_client.read(digest, offset=(5 << 20) - 7, limit=5) == data[-7:-2]


async def test_concurrent_writers_of_one_blob_on_disk(disk_client: StorageClient) -> None:
    data = os.urandom(2 << 20)
    results = await asyncio.gather(*(disk_client.write(data, chunk=256 << 10) for _ in range(8)))
    assert {r.committed_size for r in results} == {len(data)}
    assert await disk_client.read(Digest.of(data)) == data


async def test_a_bad_upload_leaves_nothing_on_disk(disk_client: StorageClient, server: ReapiServer) -> None:
    data = os.urandom(300_000)
    wrong = Digest(Digest.of(b"other").hash, len(data))
    message = await expect_error(disk_client.write(data, digest=wrong), grpc.StatusCode.INVALID_ARGUMENT)
    assert "does not match" in message
    assert await disk_client.missing([wrong]) == {wrong}
    for name in ("cas-small", "cas-large"):  # the zero-config CAS: packed small blobs, one file per large one
        assert len(server.stores[name]) == 0  # type: ignore[arg-type]


async def test_batches_and_action_cache_on_disk(disk_client: StorageClient) -> None:
    blobs = [os.urandom(1024) for _ in range(50)]
    Req = re_pb2.BatchUpdateBlobsRequest.Request
    update = await disk_client.cas.BatchUpdateBlobs(
        re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=Digest.of(b).to_proto(), data=b) for b in blobs])
    )
    assert all(r.status.code == 0 for r in update.responses)
    read = await disk_client.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[Digest.of(b).to_proto() for b in blobs]))
    assert [r.data for r in read.responses] == blobs
    action = Digest.of(b"disk action")
    result = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path=f"o{i}", digest=Digest.of(b).to_proto()) for i, b in enumerate(blobs)])
    await disk_client.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action.to_proto(), action_result=result))
    got = await disk_client.ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action.to_proto(), inline_output_files=["o3"]))
    assert got.output_files[3].contents == blobs[3]
