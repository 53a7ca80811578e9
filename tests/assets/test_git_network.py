"""Git fetches under the same network rules as downloads (issue 9): the host is
resolved and checked before git runs, git is held to the checked address, its own
redirects are not followed, transports that cannot be checked never run, and the
transfer and the tree are limited."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from google.rpc import code_pb2

from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.errors import PermissionDenied
from cas.memory import MemoryStore
from server.assets.config import AssetsConfig
from server.assets.git_transport import GitTransport
from server.assets.guard import NetworkGuard
from server.assets.limits import UnpackLimits
from server.assets.policy import FetchPolicy
from tests.assets.conftest import asset_services
from tests.assets.git_repos import GIT, Repo, bare_repo
from tests.assets.helpers import directory_request
from tests.assets.network import FakeDns, Listener
from tests.assets.trees import flatten
from tests.support.http_origin import HttpOrigin

SECOND_TREE = {
    "a.txt": b"second\n", "bin": "dir", "bin/run.sh": ("x", b"#!/bin/sh\necho run\n"), "link": ("->", "a.txt"),
    "sub": "dir", "sub/b.txt": b"b\n",
}
LOCAL = FetchPolicy(allow_private_networks=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("git"))


def config(policy: FetchPolicy = LOCAL, **limits: int) -> AssetsConfig:
    return AssetsConfig(policy=policy, limits=UnpackLimits(**limits))


async def test_git_over_http_to_loopback_is_refused_before_git_runs(origin: HttpOrigin, repo: Repo) -> None:
    url = origin.serve_directory("/git", repo.bare.parent) + "/repo.git"
    async with asset_services(AssetsConfig()) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.status.message.startswith(f"fetch of {url} refused: 127.0.0.1 is loopback")
    assert origin.requests == []


async def test_git_to_a_name_that_resolves_to_loopback_is_refused(origin: HttpOrigin, repo: Repo) -> None:
    origin.serve_directory("/git", repo.bare.parent)
    url = f"http://git.test:{origin.port}/git/repo.git"
    async with asset_services(AssetsConfig(), resolve=FakeDns({"git.test": [["127.0.0.1"]]})) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert "git.test resolves to 127.0.0.1, which is loopback" in response.status.message
    assert origin.requests == []


async def test_git_over_http_is_pinned_to_the_checked_address(origin: HttpOrigin, repo: Repo) -> None:
    """git.test is unknown to real DNS: the fetch works only because git is held to
    the address the server checked (http.curloptResolve), and no second lookup happens."""
    origin.serve_directory("/git", repo.bare.parent)
    dns = FakeDns({"git.test": [["127.0.0.1"], ["169.254.169.254"]]})
    async with asset_services(config(), resolve=dns) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(f"http://git.test:{origin.port}/git/repo.git", q=GIT))
        assert response.status.code == code_pb2.OK, response.status.message
        assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == SECOND_TREE
    assert dns.lookups == ["git.test"]
    assert origin.requests and all(r.headers.get("Host") == f"git.test:{origin.port}" for r in origin.requests)


async def test_gits_own_redirects_are_not_followed(origin: HttpOrigin, repo: Repo) -> None:
    origin.serve_directory("/git", repo.bare.parent)
    origin.serve("/moved.git/info/refs", redirect_to=origin.url("/git/repo.git/info/refs"))
    async with asset_services(config()) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(origin.url("/moved.git"), q=GIT))
    assert response.status.code == code_pb2.FAILED_PRECONDITION, response.status.message
    assert "redirect" in response.status.message
    assert origin.requests_for("/git/repo.git/info/refs") == []


@pytest.mark.parametrize("uri", ["ext::sh -c touch% /tmp/reapi-ext-ran", "fd::3", "git@127.0.0.1:repo.git", "https::http://127.0.0.1/"])
async def test_transports_that_cannot_be_checked_never_run(uri: str) -> None:
    everything = FetchPolicy(allowed_schemes=frozenset({"http", "https", "git", "ssh", "file"}), allow_private_networks=True)
    async with asset_services(config(everything)) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(uri, q=GIT))
    assert response.status.code in (code_pb2.PERMISSION_DENIED, code_pb2.INVALID_ARGUMENT), response.status.message
    assert not Path("/tmp/reapi-ext-ran").exists()


@pytest.mark.parametrize("scheme", ["git", "ssh"])
async def test_git_and_ssh_transports_to_loopback_are_refused(listener: Listener, scheme: str) -> None:
    policy = FetchPolicy(allowed_schemes=frozenset({"http", "https", scheme}))
    url = f"{scheme}://127.0.0.1:{listener.port}/repo.git"
    async with asset_services(config(policy)) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.status.message.startswith(f"fetch of {url} refused: 127.0.0.1 is loopback")
    assert not listener.connected()


@contextmanager
def git_daemon(base: Path) -> Iterator[int]:
    """``git daemon`` serving ``base`` on a free port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # `git daemon` runs git-daemon as its child: both go with the group
    )
    try:
        give_up = time.monotonic() + 60  # git daemon listens within a second, or seconds when loaded
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


async def test_the_git_protocol_connects_to_the_checked_address(repo: Repo) -> None:
    policy = FetchPolicy(allowed_schemes=frozenset({"git"}), allow_private_networks=True)
    dns = FakeDns({"daemon.test": [["127.0.0.1"]]})
    with git_daemon(repo.bare.parent) as port:
        async with asset_services(config(policy), resolve=dns) as assets:
            response = await assets.fetch.FetchDirectory(directory_request(f"git://daemon.test:{port}/repo.git", q=GIT))
            assert response.status.code == code_pb2.OK, response.status.message
            assert await flatten(assets.cas, Digest.from_proto(response.root_directory_digest)) == SECOND_TREE
    assert dns.lookups == ["daemon.test"]


async def test_ssh_is_held_to_the_checked_address_and_keeps_known_hosts_by_name() -> None:
    policy = FetchPolicy(allowed_schemes=frozenset({"ssh"}), allowed_hosts=("*", "git.example.test"))
    transport = GitTransport(NetworkGuard(policy, FakeDns({"git.example.test": [["192.0.2.7"]]})), (2, 39))
    uri = "ssh://git@git.example.test:2222/org/repo.git"
    target = await transport.target(uri, urlsplit(uri), "/nonexistent", {})
    assert target.url == uri
    assert target.env["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes -o Hostname=192.0.2.7 -o HostKeyAlias=git.example.test"
    keys = {target.env[f"GIT_CONFIG_KEY_{i}"]: target.env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(target.env["GIT_CONFIG_COUNT"]))}
    assert keys["protocol.allow"] == "never" and keys["protocol.ssh.allow"] == "always" and keys["http.followRedirects"] == "false"


async def test_the_git_transfer_is_limited(origin: HttpOrigin, tmp_path: Path) -> None:
    noise = random.Random(9).randbytes(300_000)  # incompressible: the pack is as large
    bare = bare_repo(tmp_path, {"noise.bin": noise})
    url = origin.serve_directory("/git", bare.parent) + "/repo.git"
    limited = FetchPolicy(allow_private_networks=True, max_download_size=100_000)
    async with asset_services(config(limited)) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
    assert "the git transfer passed the 97.7 KiB download limit ([assets] max_download_size)" in response.status.message


async def test_a_git_tree_is_limited_by_the_cas_counting_every_copy(origin: HttpOrigin, tmp_path: Path) -> None:
    """One 64 KiB blob used three times: stored once, but a client writes 192 KiB, past
    1/8 of a 1 MiB CAS; and the index keeps nothing for the refused tree."""
    chunk = random.Random(3).randbytes(64 << 10)
    bare = bare_repo(tmp_path, {"a.bin": chunk, "b.bin": chunk, "c.bin": chunk})
    url = origin.serve_directory("/git", bare.parent) + "/repo.git"
    async with asset_services(config(), cas=VerifyingStore(MemoryStore(1 << 20))) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
        assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
        assert "unpacked content passed the 128 KiB limit (1/8 of the CAS's 1 MiB" in response.status.message
        assert not response.HasField("root_directory_digest")


async def test_a_git_tree_with_too_many_entries_stops_while_listing(origin: HttpOrigin, tmp_path: Path) -> None:
    bare = bare_repo(tmp_path, {f"d{i % 3}/f{i}.txt": b"%d\n" % i for i in range(40)})
    url = origin.serve_directory("/git", bare.parent) + "/repo.git"
    async with asset_services(config(max_entries=10)) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url, q=GIT))
    assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
    assert "more than 10 entries ([assets] max_archive_entries)" in response.status.message


async def test_a_git_too_old_to_be_pinned_is_refused_for_names() -> None:
    guard = NetworkGuard(LOCAL, FakeDns({"git.test": [["127.0.0.1"]]}))
    uri = "http://git.test/repo.git"
    with pytest.raises(PermissionDenied, match=r"git 2\.30 cannot be held to the checked addresses \(http\.curloptResolve needs git 2\.37"):
        await GitTransport(guard, (2, 30)).target(uri, urlsplit(uri), "/nonexistent", {})
    literal = "http://127.0.0.1/repo.git"  # an address needs no pin
    target = await GitTransport(guard, (2, 30)).target(literal, urlsplit(literal), "/nonexistent", {})
    assert target.url == literal
