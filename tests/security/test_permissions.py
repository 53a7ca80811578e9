"""What each permission allows, call by call, over real gRPC with TLS and tokens.

The server writes the results of remote executions to the action cache itself, so
an identity with ``execute`` but not ``ac-write`` gets cached executions and cannot
forge one; ``worker`` covers the Bots API and the CAS reads and writes a worker
makes, nothing a build client needs; everyone's operations need ``admin``; a Remote
Asset fetch that is not in the cache needs ``execute`` (it downloads).
"""

from __future__ import annotations

import hashlib

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.security.conftest import FarmFactory
from tests.support.actions import ActionBuilder
from tests.support.http_origin import HttpOrigin
from tests.support.test_bot import TestBot
from tests.support.tokens import TokenFile

BLOB = b"a blob a worker uploads"
BLOB_DIGEST = re_pb2.Digest(hash=hashlib.sha256(BLOB).hexdigest(), size_bytes=len(BLOB))


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def response_of(operation: lro_pb2.Operation) -> re_pb2.ExecuteResponse:
    response = re_pb2.ExecuteResponse()
    assert operation.response.Unpack(response), operation
    return response


async def test_execute_without_ac_write_gets_cached_executions_and_cannot_forge_one(
    farm_factory: FarmFactory, token_file: TokenFile
) -> None:
    developer = token_file.add("developers", ["read", "write", "execute"])
    worker = token_file.add("workers", ["worker"])
    async with farm_factory() as farm, farm.channel(token=developer) as client, farm.channel(token=worker) as bots:
        action = await ActionBuilder(farm.server.instances.get("").cas).build(["cc", "a.c"], inputs={"a.c": b"int x;"})
        bot = TestBot(bots, bot_id="farm-bot")
        await bot.create()
        execution = re_grpc.ExecutionStub(client)
        call = execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))
        [lease] = await bot.poll()
        bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"compiled"))
        await bot.quick_poll()
        first = [op async for op in call]
        assert response_of(first[-1]).result.exit_code == 0 and not response_of(first[-1]).cached_result

        again = [op async for op in execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto()))]
        assert response_of(again[-1]).cached_result
        cached = await re_grpc.ActionCacheStub(client).GetActionResult(
            re_pb2.GetActionResultRequest(action_digest=action.digest.to_proto(), inline_stdout=True))
        assert cached.stdout_raw == b"compiled"

        forged = re_grpc.ActionCacheStub(client).UpdateActionResult(re_pb2.UpdateActionResultRequest(
            action_digest=action.digest.to_proto(), action_result=re_pb2.ActionResult(exit_code=0, stdout_raw=b"evil")))
        assert await code_of(forged) == grpc.StatusCode.PERMISSION_DENIED
        cached = await re_grpc.ActionCacheStub(client).GetActionResult(
            re_pb2.GetActionResultRequest(action_digest=action.digest.to_proto(), inline_stdout=True))
        assert cached.stdout_raw == b"compiled"


async def test_worker_is_for_workers_only(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    worker = token_file.add("workers", ["worker"])
    client = token_file.add("ci", ["read", "write", "ac-write", "execute"])
    async with farm_factory() as farm, farm.channel(token=worker) as bots, farm.channel(token=client) as ci:
        cas = re_grpc.ContentAddressableStorageStub(bots)
        update = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=BLOB_DIGEST, data=BLOB)]))
        assert await code_of(update) == grpc.StatusCode.OK
        assert await code_of(cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[BLOB_DIGEST]))) \
            == grpc.StatusCode.OK
        assert await code_of(cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[BLOB_DIGEST]))) \
            == grpc.StatusCode.OK
        name = f"blobs/{BLOB_DIGEST.hash}/{BLOB_DIGEST.size_bytes}"
        read = b"".join([r.data async for r in bs_grpc.ByteStreamStub(bots).Read(bs_pb2.ReadRequest(resource_name=name))])
        assert read == BLOB
        capabilities = re_grpc.CapabilitiesStub(bots).GetCapabilities(re_pb2.GetCapabilitiesRequest())
        assert await code_of(capabilities) == grpc.StatusCode.OK
        # ... but not what a build client does.
        digest = re_pb2.Digest(hash="1" * 64, size_bytes=1)
        for call in (
            re_grpc.ActionCacheStub(bots).GetActionResult(re_pb2.GetActionResultRequest(action_digest=digest)),
            re_grpc.ActionCacheStub(bots).UpdateActionResult(re_pb2.UpdateActionResultRequest(
                action_digest=digest, action_result=re_pb2.ActionResult())),
        ):
            assert await code_of(call) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in re_grpc.ExecutionStub(bots).Execute(re_pb2.ExecuteRequest(action_digest=digest)):
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "identity 'workers' (token) lacks the execute permission" in caught.value.details()

        # And a build client cannot pose as a bot.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await TestBot(ci, bot_id="rogue").create()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == (
            "CreateBotSession: identity 'ci' (token) lacks the worker permission on instance '' "
            "(it has ac-write, execute, read, write on '*')"
        )
    async with farm_factory() as farm, farm.channel() as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await TestBot(anonymous, bot_id="rogue").create()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_listing_operations_needs_admin(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    client = token_file.add("ci", ["read", "write", "ac-write", "execute"])
    admin = token_file.add("operators", ["admin"])
    async with farm_factory() as farm, farm.channel(token=client) as ci, farm.channel(token=admin) as operators:
        listing = lro_grpc.OperationsStub(ci).ListOperations(lro_pb2.ListOperationsRequest())
        assert await code_of(listing) == grpc.StatusCode.PERMISSION_DENIED
        listing = lro_grpc.OperationsStub(operators).ListOperations(lro_pb2.ListOperationsRequest())
        assert await code_of(listing) == grpc.StatusCode.OK


async def test_asset_fetches_download_only_with_execute(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    reader = token_file.add("readers", ["read"])
    builder = token_file.add("ci", ["read", "execute"])
    with HttpOrigin() as origin:
        url = origin.serve("/lib.tar.gz", b"library bytes")
        async with farm_factory() as farm, farm.channel(token=reader) as readers, farm.channel(token=builder) as ci:
            request = asset_pb2.FetchBlobRequest(uris=[url])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asset_grpc.FetchStub(readers).FetchBlob(request)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert caught.value.details() == (
                "FetchBlob: identity 'readers' (token) lacks the execute permission on instance '' (it has read on '*'); "
                "the asset is not in the cache, and fetching it downloads it")
            assert origin.requests_for("/lib.tar.gz") == []
            downloaded = await asset_grpc.FetchStub(ci).FetchBlob(request)
            assert downloaded.status.code == 0, downloaded.status
            cached = await asset_grpc.FetchStub(readers).FetchBlob(request)  # now from the cache
            assert cached.status.code == 0 and cached.blob_digest == downloaded.blob_digest
            assert len(origin.requests_for("/lib.tar.gz")) == 1
