"""Acceptance 4: bad input gets the right status and a message, and nothing stored changes.

Each case runs against a CAS that already holds a blob and an AC that holds a result;
afterwards both stores hold exactly what they held before.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import grpc
import pytest

from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.app import ReapiServer
from server.resource_names import upload_name
from tests.server.client import StorageClient, expect_error, stream, write_requests

EXISTING = b"existing blob" * 100
NEW = b"new content" * 1000
Req = re_pb2.BatchUpdateBlobsRequest.Request


def wrong_size_batch(c: StorageClient) -> Awaitable[object]:
    digest = re_pb2.Digest(hash=Digest.of(NEW).hash, size_bytes=len(NEW) + 1)
    return _batch_status(c, re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=digest, data=NEW)]))


def wrong_hash_batch(c: StorageClient) -> Awaitable[object]:
    digest = re_pb2.Digest(hash=Digest.of(b"other").hash, size_bytes=len(NEW))
    return _batch_status(c, re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=digest, data=NEW)]))


def wrong_size_write(c: StorageClient) -> Awaitable[object]:
    digest = Digest(Digest.of(NEW).hash, len(NEW) - 10)
    return c.bytestream.Write(stream(write_requests(upload_name("", str(uuid.uuid4()), digest), NEW, chunk=3000)))


def short_write(c: StorageClient) -> Awaitable[object]:
    digest = Digest(Digest.of(NEW).hash, len(NEW) + 10)
    return c.bytestream.Write(stream(write_requests(upload_name("", str(uuid.uuid4()), digest), NEW, chunk=3000)))


def wrong_hash_write(c: StorageClient) -> Awaitable[object]:
    digest = Digest(Digest.of(b"other").hash, len(NEW))
    return c.bytestream.Write(stream(write_requests(upload_name("", str(uuid.uuid4()), digest), NEW, chunk=3000)))


def malformed_read_name(c: StorageClient) -> Awaitable[object]:
    return _drain(c.bytestream.Read(bs_pb2.ReadRequest(resource_name=f"inst/blobs/{Digest.of(EXISTING).hash}/notasize")))


def malformed_write_name(c: StorageClient) -> Awaitable[object]:
    name = f"inst/uploads/blobs/{Digest.of(NEW).hash}/{len(NEW)}"  # no uuid
    return c.bytestream.Write(stream(write_requests(name, NEW)))


def unknown_function_find_missing(c: StorageClient) -> Awaitable[object]:
    return c.cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[Digest.of(NEW).to_proto()], digest_function=re_pb2.DigestFunction.SHA256TREE)
    )


def unknown_function_batch(c: StorageClient) -> Awaitable[object]:
    request = re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=Digest.of(NEW).to_proto(), data=NEW)], digest_function=cast(re_pb2.DigestFunction.Value, 42))
    return c.cas.BatchUpdateBlobs(request)


def unknown_function_write(c: StorageClient) -> Awaitable[object]:
    name = f"uploads/{uuid.uuid4()}/blobs/murmur3/{Digest.of(NEW).hash}/{len(NEW)}"
    return c.bytestream.Write(stream(write_requests(name, NEW)))


def oversized_batch(c: StorageClient) -> Awaitable[object]:
    blobs = [bytes([i]) * (3 << 20) for i in range(2)]  # 6 MiB over a 4 MiB limit
    return c.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=Digest.of(b).to_proto(), data=b) for b in blobs]))


def bad_first_offset(c: StorageClient) -> Awaitable[object]:
    name = upload_name("", str(uuid.uuid4()), Digest.of(NEW))
    return c.bytestream.Write(stream(write_requests(name, NEW[100:], offset=100)))


def gap_in_offsets(c: StorageClient) -> Awaitable[object]:
    requests = write_requests(upload_name("", str(uuid.uuid4()), Digest.of(NEW)), NEW, chunk=3000)
    requests[2].write_offset += 1
    return c.bytestream.Write(stream(requests))


def read_past_end(c: StorageClient) -> Awaitable[object]:
    return c.read(Digest.of(EXISTING), offset=len(EXISTING) + 1)


def bad_action_result(c: StorageClient) -> Awaitable[object]:
    result = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="/abs", digest=Digest.of(NEW).to_proto())])
    return c.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=Digest.of(b"act2").to_proto(), action_result=result))


CASES: dict[str, tuple[Callable[[StorageClient], Awaitable[object]], grpc.StatusCode, str]] = {
    "wrong size (batch)": (wrong_size_batch, grpc.StatusCode.INVALID_ARGUMENT, "size"),
    "wrong hash (batch)": (wrong_hash_batch, grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
    "too many bytes (write)": (wrong_size_write, grpc.StatusCode.INVALID_ARGUMENT, "digest size"),
    "too few bytes (write)": (short_write, grpc.StatusCode.INVALID_ARGUMENT, "finish_write after"),
    "wrong hash (write)": (wrong_hash_write, grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
    "malformed read name": (malformed_read_name, grpc.StatusCode.INVALID_ARGUMENT, "'notasize'"),
    "malformed write name": (malformed_write_name, grpc.StatusCode.INVALID_ARGUMENT, "expected 'blobs' after the upload id"),
    "unknown function (find missing)": (unknown_function_find_missing, grpc.StatusCode.INVALID_ARGUMENT, "SHA256TREE is not supported"),
    "unknown function (batch)": (unknown_function_batch, grpc.StatusCode.INVALID_ARGUMENT, "42 is not supported"),
    "unknown function (write)": (unknown_function_write, grpc.StatusCode.INVALID_ARGUMENT, "'murmur3' is not supported"),
    "oversized batch": (oversized_batch, grpc.StatusCode.INVALID_ARGUMENT, "limit of 4194304 bytes"),
    "bad first write offset": (bad_first_offset, grpc.StatusCode.INVALID_ARGUMENT, "write_offset 100"),
    "gap in write offsets": (gap_in_offsets, grpc.StatusCode.INVALID_ARGUMENT, "does not follow"),
    "read past the end": (read_past_end, grpc.StatusCode.OUT_OF_RANGE, "past the end"),
    "invalid action result": (bad_action_result, grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_refused_and_changes_nothing(case: str, storage_server: ReapiServer, client: StorageClient, cas_memory: MemoryStore) -> None:
    call, code, text = CASES[case]
    existing = await client.upload(EXISTING)
    action = Digest.of(b"act")
    result = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="o", digest=existing.to_proto())])
    await client.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action.to_proto(), action_result=result))
    ac = storage_server.stores["ac"]
    assert isinstance(ac, MemoryStore)
    before = (len(cas_memory), cas_memory.total_bytes, len(ac), ac.total_bytes)

    message = await expect_error(call(client), code)

    assert text in message, message
    assert (len(cas_memory), cas_memory.total_bytes, len(ac), ac.total_bytes) == before
    assert await client.missing([Digest.of(NEW)]) == {Digest.of(NEW)}
    assert await client.read(existing) == EXISTING
    got = await client.ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action.to_proto()))
    assert got == result


async def _batch_status(c: StorageClient, request: re_pb2.BatchUpdateBlobsRequest) -> None:
    """Raise the per-blob status as an RPC error, so batch cases read like the others."""
    response = await c.cas.BatchUpdateBlobs(request)
    status = response.responses[0].status
    if status.code:
        raise _StatusError(_CODES[status.code], status.message)


async def _drain(call) -> list:  # type: ignore[no-untyped-def]
    return [r async for r in call]


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _StatusError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=message)
