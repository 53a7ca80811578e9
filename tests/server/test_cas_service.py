"""ContentAddressableStorage over real gRPC: FindMissingBlobs, batches, GetTree."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2

from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.server.client import StorageClient, expect_error, memory_stores
from tests.support.servers import channel_to, config_for, running_server

Req = re_pb2.BatchUpdateBlobsRequest.Request


async def test_find_missing_reports_only_absent_blobs_in_request_order(client: StorageClient) -> None:
    present = await client.upload(b"present")
    absent = [Digest.of(f"absent {i}".encode()) for i in range(3)]
    response = await client.cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[absent[2].to_proto(), present.to_proto(), absent[0].to_proto(), absent[1].to_proto()])
    )
    assert [Digest.from_proto(d) for d in response.missing_blob_digests] == [absent[2], absent[0], absent[1]]


async def test_the_empty_blob_is_always_present(client: StorageClient) -> None:
    for function in (re_pb2.DigestFunction.SHA256, re_pb2.DigestFunction.BLAKE3, re_pb2.DigestFunction.SHA1):
        empty = Digest.empty(function)
        response = await client.cas.FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[empty.to_proto()], digest_function=function)
        )
        assert list(response.missing_blob_digests) == []
        read = await client.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[empty.to_proto()], digest_function=function))
        assert read.responses[0].status.code == code_pb2.OK and read.responses[0].data == b""


async def test_digest_functions_keep_blobs_apart(client: StorageClient) -> None:
    """A BLAKE3 blob is not the SHA-256 blob with the same-length hash."""
    b3 = await client.upload(b"blake3 content", function=re_pb2.DigestFunction.BLAKE3)
    as_sha = re_pb2.FindMissingBlobsRequest(blob_digests=[b3.to_proto()])  # unset: inferred SHA-256
    assert len((await client.cas.FindMissingBlobs(as_sha)).missing_blob_digests) == 1
    as_b3 = re_pb2.FindMissingBlobsRequest(blob_digests=[b3.to_proto()], digest_function=re_pb2.DigestFunction.BLAKE3)
    assert len((await client.cas.FindMissingBlobs(as_b3)).missing_blob_digests) == 0


async def test_batch_update_gives_each_blob_its_own_status(client: StorageClient, cas_memory: MemoryStore) -> None:
    good = b"good blob"
    bad = b"bad blob"
    wrong_hash = Digest.of(b"something else")
    request = re_pb2.BatchUpdateBlobsRequest(
        requests=[
            Req(digest=Digest.of(good).to_proto(), data=good),
            Req(digest=re_pb2.Digest(hash=wrong_hash.hash, size_bytes=len(bad)), data=bad),
            Req(digest=re_pb2.Digest(hash=Digest.of(bad).hash, size_bytes=99), data=bad),
            Req(digest=re_pb2.Digest(hash="nothex", size_bytes=3), data=b"abc"),
            Req(digest=Digest.of(b"zz").to_proto(), data=b"zz", compressor=re_pb2.Compressor.BROTLI),
        ]
    )
    response = await client.cas.BatchUpdateBlobs(request)
    codes = [r.status.code for r in response.responses]
    assert codes == [code_pb2.OK] + [code_pb2.INVALID_ARGUMENT] * 4
    assert [r.digest for r in response.responses] == [r.digest for r in request.requests]
    assert "does not match" in response.responses[1].status.message
    assert "size 99" in response.responses[2].status.message
    assert "nothex" in response.responses[3].status.message
    assert "BROTLI is not supported" in response.responses[4].status.message
    assert len(cas_memory) == 1  # only the good blob was stored
    assert await client.missing([Digest.of(good), Digest.of(bad), Digest.of(b"zz")]) == {Digest.of(bad), Digest.of(b"zz")}


async def test_batch_read_returns_data_and_per_blob_not_found(client: StorageClient) -> None:
    stored = [await client.upload(f"blob {i}".encode() * (i + 1)) for i in range(5)]
    absent = Digest.of(b"never stored")
    wanted = [stored[3], absent, stored[0], stored[3]]
    response = await client.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in wanted]))
    assert [Digest.from_proto(r.digest) for r in response.responses] == wanted
    assert response.responses[0].data == b"blob 3" * 4
    assert response.responses[1].status.code == code_pb2.NOT_FOUND
    assert str(absent) in response.responses[1].status.message
    assert response.responses[2].data == b"blob 0"
    assert response.responses[3].status.code == code_pb2.OK


async def test_batches_over_the_limit_are_refused_naming_it() -> None:
    config = config_for(stores=memory_stores(), max_batch_total_size_bytes=4 << 20)
    async with running_server(config) as srv, channel_to(srv) as channel:
        client = StorageClient(channel)
        big = [bytes([i]) * (1 << 20) for i in range(5)]  # 5 MiB in all
        request = re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=Digest.of(b).to_proto(), data=b) for b in big])
        message = await expect_error(client.cas.BatchUpdateBlobs(request), grpc.StatusCode.INVALID_ARGUMENT)
        assert "4194304" in message and "max_batch_total_size_bytes" in message
        read = re_pb2.BatchReadBlobsRequest(digests=[Digest.of(b).to_proto() for b in big])
        message = await expect_error(client.cas.BatchReadBlobs(read), grpc.StatusCode.INVALID_ARGUMENT)
        assert "4194304" in message
        assert await client.missing([Digest.of(b) for b in big]) == {Digest.of(b) for b in big}


async def test_an_unsupported_digest_function_fails_the_whole_request(client: StorageClient) -> None:
    request = re_pb2.FindMissingBlobsRequest(blob_digests=[Digest.of(b"x").to_proto()], digest_function=re_pb2.DigestFunction.MURMUR3)
    message = await expect_error(client.cas.FindMissingBlobs(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "MURMUR3 is not supported" in message
    update = re_pb2.BatchUpdateBlobsRequest(
        requests=[Req(digest=Digest.of(b"x").to_proto(), data=b"x")], digest_function=re_pb2.DigestFunction.VSO
    )
    assert "VSO" in await expect_error(client.cas.BatchUpdateBlobs(update), grpc.StatusCode.INVALID_ARGUMENT)


async def test_find_missing_rejects_malformed_digests_naming_them(client: StorageClient) -> None:
    request = re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash="xyz", size_bytes=1)])
    assert "'xyz'" in await expect_error(client.cas.FindMissingBlobs(request), grpc.StatusCode.INVALID_ARGUMENT)
    negative = re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=Digest.of(b"").hash, size_bytes=-1)])
    assert "negative" in await expect_error(client.cas.FindMissingBlobs(negative), grpc.StatusCode.INVALID_ARGUMENT)


async def test_unknown_instance_names_are_refused_naming_them(named_client: StorageClient) -> None:
    request = re_pb2.FindMissingBlobsRequest(instance_name="nope/x", blob_digests=[Digest.of(b"x").to_proto()])
    message = await expect_error(named_client.cas.FindMissingBlobs(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "'nope/x'" in message and "'main'" in message
    ok = re_pb2.FindMissingBlobsRequest(instance_name="team/ro", blob_digests=[Digest.of(b"x").to_proto()])
    assert len((await named_client.cas.FindMissingBlobs(ok)).missing_blob_digests) == 1


