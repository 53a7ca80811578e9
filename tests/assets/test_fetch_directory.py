"""FetchDirectory of archives served by a real HTTP origin: unpacking, the `directory`
qualifier, escape attempts, and caching with the origin stopped."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.assets.archives import Entry, archive_bytes
from tests.assets.conftest import AssetHarness
from tests.assets.helpers import blob_request, directory_request, sri
from tests.assets.trees import flatten
from tests.support.http_origin import HttpOrigin

ENTRIES = [
    Entry("project-1.0/src/main.c", b"int main(void) { return 0; }\n"),
    Entry("project-1.0/configure", b"#!/bin/sh\n", mode=0o755),
    Entry("project-1.0/latest", kind="symlink", target="src"),
]


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
async def test_archive_becomes_a_tree(assets: AssetHarness, origin: HttpOrigin, fmt: str) -> None:
    data = archive_bytes(fmt, ENTRIES)
    url = origin.serve(f"/project.{fmt}", data)
    response = await assets.fetch.FetchDirectory(directory_request(url, q={"checksum.sri": sri(data)}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert response.uri == url
    tree = await flatten(assets.cas, Digest.from_proto(response.root_directory_digest))
    assert tree == {
        "project-1.0": "dir",
        "project-1.0/src": "dir",
        "project-1.0/src/main.c": b"int main(void) { return 0; }\n",
        "project-1.0/configure": ("x", b"#!/bin/sh\n"),
        "project-1.0/latest": ("->", "src"),
    }


async def test_directory_qualifier_selects_a_subtree(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/p.tar.gz", archive_bytes("tar.gz", ENTRIES))
    response = await assets.fetch.FetchDirectory(directory_request(url, q={"directory": "project-1.0/src"}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == {"main.c": b"int main(void) { return 0; }\n"}
    missing = await assets.fetch.FetchDirectory(directory_request(url, q={"directory": "nope"}))
    assert missing.status.code == code_pb2.NOT_FOUND and "'nope'" in missing.status.message


async def test_an_escaping_entry_rejects_the_archive(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/evil.tar", archive_bytes("tar", [Entry("ok.txt", b"x"), Entry("../../etc/cron.d/evil", b"x")]))
    response = await assets.fetch.FetchDirectory(directory_request(url))
    assert response.status.code == code_pb2.FAILED_PRECONDITION
    assert "../../etc/cron.d/evil" in response.status.message and "escape" in response.status.message
    assert response.uri == url


async def test_not_an_archive(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/page.html", b"<html>this is an error page, not a tarball</html>" * 20)
    response = await assets.fetch.FetchDirectory(directory_request(url))
    assert response.status.code == code_pb2.FAILED_PRECONDITION and "not a valid tar" in response.status.message


async def test_cached_trees_and_archives_with_the_origin_stopped(assets: AssetHarness) -> None:
    origin = HttpOrigin().start()
    data = archive_bytes("tar.xz", ENTRIES)
    url = origin.serve("/p.tar.xz", data)
    first = await assets.fetch.FetchDirectory(directory_request(url))
    assert first.status.code == code_pb2.OK, first.status.message
    origin.stop()
    again = await assets.fetch.FetchDirectory(directory_request(url))
    assert again.root_directory_digest == first.root_directory_digest
    # Another subdirectory of the same archive: unpacked again from the cached archive blob.
    sub = await assets.fetch.FetchDirectory(directory_request(url, q={"directory": "project-1.0/src"}))
    assert sub.status.code == code_pb2.OK, sub.status.message
    # And the archive itself is a cached blob.
    blob = await assets.fetch.FetchBlob(blob_request(url))
    assert Digest.from_proto(blob.blob_digest) == Digest.of(data)


async def test_archive_checksum_mismatch(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/p.tar", archive_bytes("tar", ENTRIES))
    response = await assets.fetch.FetchDirectory(directory_request(url, q={"checksum.sri": sri(b"other")}))
    assert response.status.code == code_pb2.ABORTED


async def test_blake3_tree(assets: AssetHarness, origin: HttpOrigin) -> None:
    url = origin.serve("/p.zip", archive_bytes("zip", ENTRIES))
    response = await assets.fetch.FetchDirectory(directory_request(url, function=re_pb2.DigestFunction.BLAKE3))
    assert response.digest_function == re_pb2.DigestFunction.BLAKE3
    root = Digest.from_proto(response.root_directory_digest, re_pb2.DigestFunction.BLAKE3)
    assert (await flatten(assets.cas, root))["project-1.0/configure"] == ("x", b"#!/bin/sh\n")


@pytest.mark.parametrize(
    ("q", "complaint"),
    [
        ({"resource_type": "text/html"}, "cannot be unpacked"),
        ({"vcs.commit": "a" * 40}, "need resource_type"),
        ({"unknown.thing": "1"}, "unknown.thing"),
    ],
)
async def test_bad_directory_requests(assets: AssetHarness, origin: HttpOrigin, q: dict[str, str], complaint: str) -> None:
    url = origin.serve("/p.tar", archive_bytes("tar", ENTRIES))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await assets.fetch.FetchDirectory(directory_request(url, q=q))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (caught.value.details() or "")
