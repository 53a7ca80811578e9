"""FetchDirectory of git repositories created by the test, served over HTTP (git's
dumb protocol, from the test origin) and, when the policy allows, over file://."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from cas.digest import Digest
from cas.errors import NotFound, PermissionDenied, ReapiError, Unavailable
from server.assets.config import AssetsConfig
from server.assets.git import GitFailed, GitFetcher
from server.assets.policy import FetchPolicy
from tests.assets.conftest import AssetHarness, asset_services
from tests.assets.git_repos import GIT, Repo
from tests.assets.helpers import directory_request
from tests.assets.trees import flatten
from tests.support.http_origin import HttpOrigin


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("git"))


FIRST_TREE = {
    "a.txt": b"first\n",
    "bin": "dir",
    "bin/run.sh": ("x", b"#!/bin/sh\necho run\n"),
    "link": ("->", "a.txt"),
}
SECOND_TREE = {**FIRST_TREE, "a.txt": b"second\n", "sub": "dir", "sub/b.txt": b"b\n"}


async def test_fetch_a_commit_over_http(assets: AssetHarness, origin: HttpOrigin, repo: Repo) -> None:
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    response = await assets.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.commit": repo.first}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == FIRST_TREE
    assert ("vcs.commit", repo.first) in {(q.name, q.value) for q in response.qualifiers}


async def test_fetch_a_branch_reports_its_commit_and_caches_it(assets: AssetHarness, repo: Repo) -> None:
    origin = HttpOrigin().start()
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    response = await assets.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.branch": "main", "directory": "sub"}))
    assert response.status.code == code_pb2.OK, response.status.message
    assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == {"b.txt": b"b\n"}
    assert ("vcs.commit", repo.second) in {(q.name, q.value) for q in response.qualifiers}
    origin.stop()
    # The branch's commit is now known by id too, with the origin gone.
    by_commit = await assets.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.commit": repo.second, "directory": "sub"}))
    assert by_commit.root_directory_digest == response.root_directory_digest


async def test_default_branch_without_a_ref(assets: AssetHarness, origin: HttpOrigin, repo: Repo) -> None:
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.OK, response.status.message
    assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == SECOND_TREE


async def test_missing_commits_and_repositories_are_not_found(assets: AssetHarness, origin: HttpOrigin, repo: Repo) -> None:
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    response = await assets.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.commit": "0" * 40}))
    assert response.status.code == code_pb2.NOT_FOUND, response.status.message
    nowhere = origin.url("/git/absent.git")
    response = await assets.fetch.FetchDirectory(directory_request(nowhere, q=GIT))
    assert response.status.code == code_pb2.NOT_FOUND, response.status.message
    assert nowhere in response.status.message


async def test_file_repositories_need_the_file_scheme(assets: AssetHarness, repo: Repo) -> None:
    url = repo.bare.as_uri()
    denied = await assets.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.commit": repo.first}))
    assert denied.status.code == code_pb2.PERMISSION_DENIED
    async with asset_services(AssetsConfig(policy=FetchPolicy(allowed_schemes=frozenset({"file"})))) as allowed:
        response = await allowed.fetch.FetchDirectory(directory_request(url, q={**GIT, "vcs.commit": repo.first}))
        assert response.status.code == code_pb2.OK, response.status.message
        assert await flatten(allowed.cas, Digest.from_proto(response.root_directory_digest)) == FIRST_TREE


async def test_headers_reach_a_git_origin(assets: AssetHarness, origin: HttpOrigin, repo: Repo) -> None:
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    q = {**GIT, "vcs.commit": repo.first, "http_header:Authorization": "Bearer git-token"}
    response = await assets.fetch.FetchDirectory(directory_request(url, q=q))
    assert response.status.code == code_pb2.OK, response.status.message
    assert origin.requests and all(r.headers.get("Authorization") == "Bearer git-token" for r in origin.requests)


@pytest.mark.parametrize(("stderr", "expected"), [
    ("fatal: repository '{uri}/' not found", NotFound),
    ("fatal: unable to access '{uri}/': The requested URL returned error: 403", PermissionDenied),
    ("fatal: unable to access '{uri}/': The requested URL returned error: 401", PermissionDenied),
    ("fatal: unable to access '{uri}/': The requested URL returned error: 404", NotFound),
    ("fatal: unable to access '{uri}/': Failed to connect to 127.0.0.1 port 44017", Unavailable),
])
def test_a_port_that_looks_like_an_http_status_is_not_one(stderr: str, expected: type[ReapiError]) -> None:
    """Port 44017 holds "401", port 40443 holds "404": only git's "returned error: N" is a status."""
    for uri in ("http://127.0.0.1:44017/git/absent.git", "http://127.0.0.1:40443/git/absent.git"):
        fetcher = GitFetcher.__new__(GitFetcher)  # _error reads nothing of the fetcher
        error = fetcher._error(uri, GitFailed(stderr.format(uri=uri)), uri)
        assert type(error) is expected, (uri, error)
        assert uri in error.message
