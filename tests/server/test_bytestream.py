"""ByteStream over real gRPC: reads with offset/limit, writes, resumable and concurrent uploads."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import grpc

from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.app import ReapiServer
from server.resource_names import download_name, upload_name
from tests.server.client import StorageClient, expect_error, stream, write_requests

DATA = os.urandom(3 << 20)  # several read chunks
DIGEST = Digest.of(DATA)


async def test_write_then_read_whole_and_ranges(client: StorageClient) -> None:
    response = await client.write(DATA, chunk=100_000)
    assert response.committed_size == len(DATA)
    assert await client.read(DIGEST) == DATA
    assert await client.read(DIGEST, offset=1_000_000) == DATA[1_000_000:]
    assert await client.read(DIGEST, offset=5, limit=10) == DATA[5:15]
    assert await client.read(DIGEST, offset=len(DATA) - 3, limit=100) == DATA[-3:]
    assert await client.read(DIGEST, offset=len(DATA)) == b""


async def test_reads_come_in_bounded_chunks(client: StorageClient) -> None:
    await client.write(DATA)
    request = bs_pb2.ReadRequest(resource_name=download_name("", DIGEST))
    sizes = [len(r.data) async for r in client.bytestream.Read(request)]
    assert sum(sizes) == len(DATA) and len(sizes) >= 3 and max(sizes) <= 1 << 20


async def test_read_past_the_end_is_out_of_range(client: StorageClient) -> None:
    digest = await client.upload(b"0123456789")
    message = await expect_error(client.read(digest, offset=11), grpc.StatusCode.OUT_OF_RANGE)
    assert "offset 11" in message
    assert "negative" in await expect_error(client.read(digest, offset=-1), grpc.StatusCode.OUT_OF_RANGE)
    assert "negative" in await expect_error(client.read(digest, limit=-1), grpc.StatusCode.OUT_OF_RANGE)


async def test_read_of_an_absent_blob_is_not_found(client: StorageClient) -> None:
    absent = Digest.of(b"absent")
    assert str(absent) in await expect_error(client.read(absent), grpc.StatusCode.NOT_FOUND)


async def test_empty_blob_reads_and_writes_without_storage(client: StorageClient, cas_memory: MemoryStore) -> None:
    empty = Digest.empty()
    assert await client.read(empty) == b""
    assert (await client.write(b"")).committed_size == 0
    assert len(cas_memory) == 0


async def test_instance_names_with_slashes_metadata_and_blake3(client: StorageClient) -> None:
    data = b"blake3 bytes" * 1000
    digest = Digest.of(data, re_pb2.DigestFunction.BLAKE3)
    name = upload_name("team/x86/linux", str(uuid.uuid4()), digest, metadata="meta/data")
    assert "/blake3/" in name
    response = await client.bytestream.Write(stream(write_requests(name, data, chunk=5000)))
    assert response.committed_size == len(data)
    assert await client.read(digest, instance="team/x86/linux") == data
    # The same hash read as SHA-256 (no function segment) is a different blob.
    sha_name = f"team/x86/linux/blobs/{digest.hash}/{digest.size_bytes}"
    await expect_error(_read_all(client, sha_name), grpc.StatusCode.NOT_FOUND)


async def test_an_existing_blob_finishes_at_once_with_its_full_size(client: StorageClient) -> None:
    digest = await client.upload(b"already here")
    name = upload_name("", str(uuid.uuid4()), digest)
    first_only = [bs_pb2.WriteRequest(resource_name=name, write_offset=0, data=b"alr")]  # no finish_write
    response = await client.bytestream.Write(stream(first_only))
    assert response.committed_size == digest.size_bytes
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (digest.size_bytes, True)


async def test_many_concurrent_writers_of_one_blob(client: StorageClient, cas_memory: MemoryStore) -> None:
    data = os.urandom(600_000)
    results = await asyncio.gather(*(client.write(data, chunk=50_000) for _ in range(12)))
    assert {r.committed_size for r in results} == {len(data)}
    assert await client.read(Digest.of(data)) == data
    assert len(cas_memory) == 1


async def test_a_broken_off_write_resumes_from_query_write_status(client: StorageClient, storage_server: ReapiServer) -> None:
    name = upload_name("", str(uuid.uuid4()), DIGEST)
    requests = write_requests(name, DATA, chunk=256 << 10)
    half = len(requests) // 2
    message = await expect_error(
        lambda: client.bytestream.Write(stream(requests[:half])), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "without finish_write" in message
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (half * (256 << 10), False)
    assert await client.missing([DIGEST]) == {DIGEST}  # not visible until finished
    rest = write_requests(name, DATA[status.committed_size :], chunk=256 << 10, offset=status.committed_size)
    assert (await client.bytestream.Write(stream(rest))).committed_size == len(DATA)
    assert await client.read(DIGEST) == DATA
    assert storage_server.uploads is not None and len(storage_server.uploads) == 0


async def test_a_cancelled_write_keeps_what_arrived(client: StorageClient) -> None:
    name = upload_name("", str(uuid.uuid4()), DIGEST)
    requests = write_requests(name, DATA, chunk=1 << 20)
    sent = asyncio.Event()

    async def then_stall() -> AsyncIterator[bs_pb2.WriteRequest]:
        yield requests[0]
        yield requests[1]
        sent.set()
        await asyncio.Event().wait()

    call = client.bytestream.Write(then_stall())
    await sent.wait()
    status = bs_pb2.QueryWriteStatusResponse()
    give_up = asyncio.get_running_loop().time() + 60  # only stops a hang, however loaded the machine
    while asyncio.get_running_loop().time() < give_up:  # wait for the server to take in both chunks
        status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
        if status.committed_size == 2 << 20:
            break
        await asyncio.sleep(0.01)
    assert status.committed_size == 2 << 20
    call.cancel()
    rest = write_requests(name, DATA[2 << 20 :], chunk=1 << 20, offset=2 << 20)
    assert (await client.bytestream.Write(stream(rest))).committed_size == len(DATA)
    assert await client.read(DIGEST) == DATA


async def test_restarting_at_offset_zero_replaces_a_partial_upload(client: StorageClient) -> None:
    name = upload_name("", str(uuid.uuid4()), DIGEST)
    requests = write_requests(name, DATA, chunk=1 << 20)
    await expect_error(lambda: client.bytestream.Write(stream(requests[:1])), grpc.StatusCode.INVALID_ARGUMENT)
    assert (await client.bytestream.Write(stream(requests))).committed_size == len(DATA)
    assert await client.read(DIGEST) == DATA


async def test_query_write_status_of_an_unknown_upload_is_zero(client: StorageClient) -> None:
    name = upload_name("", str(uuid.uuid4()), Digest.of(b"never"))
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (0, False)


async def test_write_streams_must_be_consistent(client: StorageClient) -> None:
    data = b"x" * 1000
    name = upload_name("", str(uuid.uuid4()), Digest.of(data))
    other = upload_name("", str(uuid.uuid4()), Digest.of(data))
    requests = write_requests(name, data, chunk=400)
    requests[1].resource_name = other
    assert "changed" in await expect_error(lambda: client.bytestream.Write(stream(requests)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "no WriteRequest" in await expect_error(lambda: client.bytestream.Write(stream([])), grpc.StatusCode.INVALID_ARGUMENT)
    early = write_requests(upload_name("", "u1", Digest.of(data)), data[:400], chunk=400)
    message = await expect_error(lambda: client.bytestream.Write(stream(early)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "finish_write after 400 bytes" in message


async def _read_all(client: StorageClient, name: str) -> bytes:
    return b"".join([r.data async for r in client.bytestream.Read(bs_pb2.ReadRequest(resource_name=name))])


async def test_a_whole_blob_in_one_message_is_stored_and_replaces_a_partial_upload(
    client: StorageClient, cas_memory: MemoryStore
) -> None:
    data = os.urandom(5000)
    digest = Digest.of(data)
    name = upload_name("", str(uuid.uuid4()), digest)
    partial = write_requests(name, data[:2000], finish=False)
    await expect_error(lambda: client.bytestream.Write(stream(partial)), grpc.StatusCode.INVALID_ARGUMENT)
    [whole] = write_requests(name, data, chunk=len(data))
    assert (await client.bytestream.Write(stream([whole]))).committed_size == len(data)
    assert await client.read(digest) == data
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (len(data), True)


async def test_a_one_message_write_that_does_not_match_its_digest_stores_nothing(
    client: StorageClient, cas_memory: MemoryStore
) -> None:
    data = b"the real content"
    digest = Digest.of(data)
    [wrong] = write_requests(upload_name("", str(uuid.uuid4()), digest), b"THE REAL CONTENT", chunk=100)
    message = await expect_error(lambda: client.bytestream.Write(stream([wrong])), grpc.StatusCode.INVALID_ARGUMENT)
    assert digest.hash in message
    assert len(cas_memory) == 0
