"""PushBlob / PushDirectory, then Fetch by URI (BuildStream's URNs included), expiry."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.assets.config import AssetsConfig
from tests.assets.conftest import AssetHarness, asset_services
from tests.assets.helpers import blob_request, directory_request, qualifiers, sri, timestamp

URN = "urn:fdc:buildstream.build:2020:artifact:project/element/0123abcd"
ARTIFACT = b"an artifact proto"


async def store(assets: AssetHarness, data: bytes, function: int = re_pb2.DigestFunction.SHA256) -> Digest:
    digest = Digest.of(data, function)
    await assets.cas.put_bytes(digest, data)
    return digest


async def stored_tree(assets: AssetHarness) -> tuple[Digest, Digest]:
    """A one-file tree in the CAS: (root directory, file)."""
    file = await store(assets, b"file content")
    root = re_pb2.Directory()
    root.files.add(name="f", digest=file.to_proto())
    return await store(assets, root.SerializeToString()), file


async def test_push_then_fetch_by_urn_until_it_expires(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    expire_at = assets.clock.now + 3600
    await assets.push.PushBlob(
        asset_pb2.PushBlobRequest(uris=[URN], blob_digest=digest.to_proto(), expire_at=timestamp(expire_at))
    )
    response = await assets.fetch.FetchBlob(blob_request(URN))
    assert response.status.code == code_pb2.OK, response.status.message
    assert Digest.from_proto(response.blob_digest) == digest
    assert response.uri == URN
    assert response.expires_at.seconds == int(expire_at)
    assets.clock.now = expire_at + 1
    expired = await assets.fetch.FetchBlob(blob_request(URN))
    assert expired.status.code == code_pb2.NOT_FOUND  # BuildStream reads this as a miss


async def test_push_without_expiry_and_several_uris(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    await assets.push.PushBlob(asset_pb2.PushBlobRequest(uris=[URN, URN + "-alias"], blob_digest=digest.to_proto()))
    assets.clock.now += 10 * 365 * 86400
    for uri in (URN, URN + "-alias"):
        response = await assets.fetch.FetchBlob(blob_request(uri))
        assert Digest.from_proto(response.blob_digest) == digest
        assert not response.HasField("expires_at")


async def test_qualifiers_must_match_exactly(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    pushed = {"buildstream.kind": "artifact", "resource_type": "application/x-bst"}
    await assets.push.PushBlob(asset_pb2.PushBlobRequest(uris=[URN], qualifiers=qualifiers(pushed), blob_digest=digest.to_proto()))
    hit = await assets.fetch.FetchBlob(blob_request(URN, q=pushed))  # an unknown qualifier is fine for pushed content
    assert Digest.from_proto(hit.blob_digest) == digest
    assert {(q.name, q.value) for q in hit.qualifiers} == set(pushed.items())
    miss = await assets.fetch.FetchBlob(blob_request(URN, q={"resource_type": "application/x-bst"}))
    assert miss.status.code == code_pb2.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # nothing pushed, and the origin cannot honour it
        await assets.fetch.FetchBlob(blob_request(URN, q={**pushed, "buildstream.kind": "source"}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_instances_are_kept_apart(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    await assets.push.PushBlob(asset_pb2.PushBlobRequest(instance_name="a", uris=[URN], blob_digest=digest.to_proto()))
    assert (await assets.fetch.FetchBlob(blob_request(URN, instance="a"))).status.code == code_pb2.OK
    assert (await assets.fetch.FetchBlob(blob_request(URN, instance="b"))).status.code == code_pb2.NOT_FOUND


async def test_push_directory_then_fetch_it(assets: AssetHarness) -> None:
    root, file = await stored_tree(assets)
    await assets.push.PushDirectory(asset_pb2.PushDirectoryRequest(uris=[URN], root_directory_digest=root.to_proto()))
    response = await assets.fetch.FetchDirectory(directory_request(URN))
    assert response.status.code == code_pb2.OK, response.status.message
    assert Digest.from_proto(response.root_directory_digest) == root
    # A file under the root disappears: the entry is incomplete, so it is not served.
    assets.cas.inner._values.pop(file)  # type: ignore[attr-defined]
    gone = await assets.fetch.FetchDirectory(directory_request(URN))
    assert gone.status.code == code_pb2.NOT_FOUND


async def test_referenced_blobs_must_still_exist(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    referenced = await store(assets, b"a file the artifact names")
    await assets.push.PushBlob(
        asset_pb2.PushBlobRequest(uris=[URN], blob_digest=digest.to_proto(), references_blobs=[referenced.to_proto()])
    )
    assert (await assets.fetch.FetchBlob(blob_request(URN))).status.code == code_pb2.OK
    assets.cas.inner._values.pop(referenced)  # type: ignore[attr-defined]
    assert (await assets.fetch.FetchBlob(blob_request(URN))).status.code == code_pb2.NOT_FOUND


async def test_pushing_content_not_in_the_cas_is_failed_precondition(assets: AssetHarness) -> None:
    absent = Digest.of(b"never uploaded")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await assets.push.PushBlob(asset_pb2.PushBlobRequest(uris=[URN], blob_digest=absent.to_proto()))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = status_pb2.Status.FromString(dict(caught.value.trailing_metadata())["grpc-status-details-bin"])
    failure = error_details_pb2.PreconditionFailure()
    status.details[0].Unpack(failure)
    assert [(v.type, v.subject) for v in failure.violations] == [("MISSING", f"blobs/{absent.hash}/{absent.size_bytes}")]


async def test_bad_push_requests_are_invalid_argument(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    for request in (
        asset_pb2.PushBlobRequest(blob_digest=digest.to_proto()),
        asset_pb2.PushBlobRequest(uris=[""], blob_digest=digest.to_proto()),
        asset_pb2.PushBlobRequest(uris=[URN], blob_digest=re_pb2.Digest(hash="xyz", size_bytes=1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await assets.push.PushBlob(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_proven_checksum_answers_fetches_of_other_uris(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    await assets.push.PushBlob(
        asset_pb2.PushBlobRequest(uris=[URN], qualifiers=qualifiers({"checksum.sri": sri(ARTIFACT)}), blob_digest=digest.to_proto())
    )
    response = await assets.fetch.FetchBlob(blob_request("https://mirror.invalid/a", q={"checksum.sri": sri(ARTIFACT)}))
    assert Digest.from_proto(response.blob_digest) == digest


async def test_an_unproven_checksum_claim_is_not_trusted_for_other_uris(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT)
    claim = sri(b"different content")
    await assets.push.PushBlob(
        asset_pb2.PushBlobRequest(uris=[URN], qualifiers=qualifiers({"checksum.sri": claim}), blob_digest=digest.to_proto())
    )
    response = await assets.fetch.FetchBlob(blob_request("https://mirror.invalid/a", q={"checksum.sri": claim}))
    assert response.status.code != code_pb2.OK


async def test_blake3_push_and_fetch(assets: AssetHarness) -> None:
    digest = await store(assets, ARTIFACT, re_pb2.DigestFunction.BLAKE3)
    await assets.push.PushBlob(
        asset_pb2.PushBlobRequest(uris=[URN], blob_digest=digest.to_proto(), digest_function=re_pb2.DigestFunction.BLAKE3)
    )
    assert (await assets.fetch.FetchBlob(blob_request(URN))).status.code == code_pb2.NOT_FOUND  # SHA-256 asked
    response = await assets.fetch.FetchBlob(blob_request(URN, function=re_pb2.DigestFunction.BLAKE3))
    assert Digest.from_proto(response.blob_digest, re_pb2.DigestFunction.BLAKE3) == digest


async def test_push_can_be_disabled() -> None:
    async with asset_services(AssetsConfig(allow_push=False)) as assets:
        digest = await store(assets, ARTIFACT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await assets.push.PushBlob(asset_pb2.PushBlobRequest(uris=[URN], blob_digest=digest.to_proto()))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
