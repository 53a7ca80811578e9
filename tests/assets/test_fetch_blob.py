"""FetchBlob against a real HTTP origin on 127.0.0.1: checksums, headers, statuses,
redirects, limits and caching (with the origin stopped)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.assets.config import AssetsConfig
from server.assets.policy import FetchPolicy
from tests.assets.conftest import AssetHarness, asset_services
from tests.assets.helpers import blob_request, sri
from tests.support.http_origin import HttpOrigin

DATA = b"the quick brown fox\n" * 1000
BLAKE3 = re_pb2.DigestFunction.BLAKE3


async def test_checksum_match_stores_the_blob(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/fox.txt", DATA)
    response = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": sri(DATA)}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert response.uri == url
    assert Digest.from_proto(response.blob_digest) == Digest.of(DATA)
    assert response.digest_function == re_pb2.DigestFunction.SHA256
    assert await assets.cas.get_bytes(Digest.of(DATA)) == DATA


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])  # direct to the CAS, and spooled
async def test_checksum_mismatch_is_aborted_and_stores_nothing(assets: AssetHarness, origin: HttpOrigin, algorithm: str) -> None:
    url = origin.serve("/fox.txt", DATA)
    response = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": sri(b"something else", algorithm)}))
    assert response.status.code == code_pb2.ABORTED
    assert "checksum mismatch" in response.status.message and url in response.status.message
    assert response.uri == url
    assert not response.HasField("blob_digest")
    assert not await assets.cas.has(Digest.of(DATA))


@pytest.mark.parametrize("checksum", [True, False])
async def test_a_body_without_content_length_is_spooled_and_checked(assets: AssetHarness, origin: HttpOrigin, checksum: bool) -> None:
    url = origin.serve("/unsized", DATA, content_length=False)
    response = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": sri(DATA)} if checksum else None))
    assert response.status.code == code_pb2.OK, response.status.message
    assert await assets.cas.get_bytes(Digest.from_proto(response.blob_digest)) == DATA
    bad = await assets.fetch.FetchBlob(blob_request(origin.serve("/unsized2", DATA, content_length=False), q={"checksum.sri": sri(b"x")}))
    assert bad.status.code == code_pb2.ABORTED


async def test_several_sri_hashes_any_match_suffices(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/fox.txt", DATA)
    value = f"{sri(b'wrong')} {sri(DATA, 'sha384')} {sri(b'also wrong', 'sha512')}"
    response = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": value}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert Digest.from_proto(response.blob_digest) == Digest.of(DATA)


async def test_blake3_digest_with_a_sha256_checksum(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/fox.txt", DATA)
    response = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": sri(DATA)}, function=BLAKE3))
    assert response.status.code == code_pb2.OK, response.status.message
    assert response.digest_function == BLAKE3
    digest = Digest.from_proto(response.blob_digest, BLAKE3)
    assert digest == Digest.of(DATA, BLAKE3)
    assert await assets.cas.get_bytes(digest) == DATA
    bad = await assets.fetch.FetchBlob(blob_request(url, q={"checksum.sri": sri(b"x")}, function=BLAKE3))
    assert bad.status.code == code_pb2.ABORTED


async def test_headers_reach_the_origin_url_specific_first(assets: AssetHarness, origin: HttpOrigin) -> None:
    first = origin.serve("/private-a", b"a", require_headers={"Authorization": "Bearer general"})
    second = origin.serve("/private-b", DATA, require_headers={"Authorization": "Bearer only-b", "X-Extra": "1"})
    q = {"http_header:Authorization": "Bearer general", "http_header:X-Extra": "1", "http_header_url:1:Authorization": "Bearer only-b"}
    response = await assets.fetch.FetchBlob(blob_request(first, second, q={**q, "checksum.sri": sri(DATA)}))
    # The first URI gets the general header but serves other content: its checksum fails.
    assert response.status.code == code_pb2.OK, response.status.message
    assert response.uri == second
    assert origin.requests_for("/private-a")[0].headers["Authorization"] == "Bearer general"
    seen = origin.requests_for("/private-b")[0].headers
    assert seen["Authorization"] == "Bearer only-b" and seen["X-Extra"] == "1"
    assert "Bearer" not in str(response.qualifiers), "credentials must not be echoed back"


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, code_pb2.NOT_FOUND), (410, code_pb2.NOT_FOUND), (403, code_pb2.PERMISSION_DENIED),
     (401, code_pb2.PERMISSION_DENIED), (503, code_pb2.UNAVAILABLE)],
)
async def test_origin_errors_are_inline_statuses_naming_the_uri(assets: AssetHarness, origin: HttpOrigin, status: int, code: int) -> None:
    url = origin.serve("/answer", b"no", status=status)
    response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code
    assert url in response.status.message and str(status) in response.status.message
    assert response.uri == url


async def test_missing_required_header_is_permission_denied(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/private", DATA, require_headers={"Authorization": "Bearer t"})
    response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code_pb2.PERMISSION_DENIED


async def test_a_stalled_origin_gives_deadline_exceeded(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/stall", stall=True)
    response = await assets.fetch.FetchBlob(blob_request(url, timeout=0.3))
    assert response.status.code == code_pb2.DEADLINE_EXCEEDED
    assert url in response.status.message and "0.3s" in response.status.message


async def test_redirects_are_followed_and_rechecked(origin: HttpOrigin) -> None:
    with HttpOrigin() as other:
        target = other.serve("/real", DATA)
        hop = origin.serve("/hop", redirect_to=target)
        start = origin.serve("/start", redirect_to="/hop", status=301)
        loop = origin.serve("/loop", redirect_to="/loop")
        async with asset_services() as assets:
            q = {"http_header:Authorization": "Bearer secret", "http_header:X-Keep": "yes"}
            response = await assets.fetch.FetchBlob(blob_request(start, q=q))
            assert response.status.code == code_pb2.OK, response.status.message
            assert Digest.from_proto(response.blob_digest) == Digest.of(DATA)
            assert origin.requests_for("/hop")[0].headers["Authorization"] == "Bearer secret"
            crossed = other.requests_for("/real")[0].headers
            assert "Authorization" not in crossed, "credentials must not follow a redirect to another origin"
            assert crossed["X-Keep"] == "yes"
            looped = await assets.fetch.FetchBlob(blob_request(loop))
            assert looped.status.code == code_pb2.FAILED_PRECONDITION and "redirects" in looped.status.message
        # The same redirect into a denied host is refused at the hop.
        policy = FetchPolicy(allowed_hosts=("127.0.0.1",), denied_hosts=("127.0.0.1",), allow_private_networks=True)
        async with asset_services(AssetsConfig(policy=policy)) as denied:
            response = await denied.fetch.FetchBlob(blob_request(hop))
            assert response.status.code == code_pb2.PERMISSION_DENIED
            assert "not allowed by the fetch policy" in response.status.message


async def test_redirect_to_a_forbidden_scheme_is_refused(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/to-file", redirect_to="file:///etc/passwd")
    response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code_pb2.PERMISSION_DENIED and "file" in response.status.message


async def test_cache_hit_with_the_origin_stopped(assets: AssetHarness) -> None:
    origin = HttpOrigin().start()
    url = origin.serve("/fox.txt", DATA)
    first = await assets.fetch.FetchBlob(blob_request(url))
    assert first.status.code == code_pb2.OK
    origin.stop()
    again = await assets.fetch.FetchBlob(blob_request(url))
    assert again.status.code == code_pb2.OK, again.status.message
    assert again.blob_digest == first.blob_digest
    # A known checksum is answered without the network, whatever the URI.
    elsewhere = await assets.fetch.FetchBlob(blob_request("https://unreachable.invalid/fox.txt", q={"checksum.sri": sri(DATA)}))
    assert elsewhere.status.code == code_pb2.OK, elsewhere.status.message
    assert elsewhere.blob_digest == first.blob_digest


async def test_oldest_content_accepted_forces_a_refetch(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/moving", b"version 1")
    first = await assets.fetch.FetchBlob(blob_request(url))
    fetched_at = assets.clock.now
    origin.serve("/moving", b"version 2")
    assets.clock.now += 60
    cached = await assets.fetch.FetchBlob(blob_request(url, oldest=fetched_at))
    assert cached.blob_digest == first.blob_digest and len(origin.requests_for("/moving")) == 1
    fresh = await assets.fetch.FetchBlob(blob_request(url, oldest=fetched_at + 1))
    assert Digest.from_proto(fresh.blob_digest) == Digest.of(b"version 2")
    assert len(origin.requests_for("/moving")) == 2


async def test_evicted_content_is_fetched_again(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/fox.txt", DATA)
    await assets.fetch.FetchBlob(blob_request(url))
    inner = assets.cas.inner  # type: ignore[attr-defined]
    inner._values.clear()  # the CAS lost the blob (eviction)
    response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code_pb2.OK
    assert len(origin.requests_for("/fox.txt")) == 2
    assert await assets.cas.has(Digest.of(DATA))


async def test_mirrors_are_tried_in_order(assets: AssetHarness, origin: HttpOrigin) -> None:
    gone = origin.serve("/gone", status=404)
    good = origin.serve("/good", DATA)
    response = await assets.fetch.FetchBlob(blob_request(gone, good))
    assert response.status.code == code_pb2.OK and response.uri == good
    both_bad = await assets.fetch.FetchBlob(blob_request(gone, origin.serve("/bad", DATA), q={"checksum.sri": sri(b"x")}))
    # The checksum mismatch says more than the 404; the message lists both.
    assert both_bad.status.code == code_pb2.ABORTED
    assert "/gone" in both_bad.status.message and "/bad" in both_bad.status.message


async def test_size_limit_is_resource_exhausted(origin: HttpOrigin) -> None:
    url = origin.serve("/big", DATA)
    async with asset_services(AssetsConfig(policy=FetchPolicy(max_download_size=100, allow_private_networks=True))) as assets:
        response = await assets.fetch.FetchBlob(blob_request(url))
        assert response.status.code == code_pb2.RESOURCE_EXHAUSTED
        assert "100-byte" in response.status.message and url in response.status.message


async def test_schemes_file_is_off_by_default_and_urns_are_not_found(assets: AssetHarness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "f.txt"
    local.write_bytes(DATA)
    denied = await assets.fetch.FetchBlob(blob_request(local.as_uri()))
    assert denied.status.code == code_pb2.PERMISSION_DENIED and "allowed schemes" in denied.status.message
    urn = await assets.fetch.FetchBlob(blob_request("urn:fdc:example.com:2020:thing"))
    assert urn.status.code == code_pb2.NOT_FOUND
    async with asset_services(AssetsConfig(policy=FetchPolicy(allowed_schemes=frozenset({"file"})))) as allowed:
        response = await allowed.fetch.FetchBlob(blob_request(local.as_uri(), q={"checksum.sri": sri(DATA)}))
        assert response.status.code == code_pb2.OK, response.status.message
        assert Digest.from_proto(response.blob_digest) == Digest.of(DATA)


async def test_unsupported_qualifiers_are_invalid_argument(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/fox.txt", DATA)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await assets.fetch.FetchBlob(blob_request(url, q={"vcs.commit": "a" * 40, "made.up": "1"}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "made.up" in (caught.value.details() or "")
    status = status_pb2.Status.FromString(dict(caught.value.trailing_metadata())["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert {v.description for v in bad.field_violations} == {'"made.up" not supported', '"vcs.commit" not supported'}
    assert origin.requests_for("/fox.txt") == []


async def test_requests_without_uris_or_with_bad_functions_are_refused(assets: AssetHarness) -> None:
    for request in (blob_request(), blob_request("http://x/", function=re_pb2.DigestFunction.VSO)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await assets.fetch.FetchBlob(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_fetch_outlives_a_short_rpc_deadline_and_the_retry_joins_it(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/slow", DATA, delay=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await assets.fetch.FetchBlob(blob_request(url), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    retry = await assets.fetch.FetchBlob(blob_request(url))
    assert retry.status.code == code_pb2.OK, retry.status.message
    assert Digest.from_proto(retry.blob_digest) == Digest.of(DATA)
    assert len(origin.requests_for("/slow")) == 1


async def test_concurrent_identical_fetches_share_one_download(assets: AssetHarness, origin: HttpOrigin) -> None:
    import asyncio

    url = origin.serve("/fox.txt", DATA)
    responses = await asyncio.gather(*(assets.fetch.FetchBlob(blob_request(url)) for _ in range(5)))
    assert {r.status.code for r in responses} == {code_pb2.OK}
    assert len(origin.requests_for("/fox.txt")) == 1
