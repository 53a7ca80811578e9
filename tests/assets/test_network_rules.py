"""Issue 9 (acceptance 6): fetches of loopback, link-local (cloud metadata), private and
reserved addresses and of the server's own port are refused by default, after DNS,
at every redirect hop, in every spelling of an address.

Refusals must come before any connection: a bare listening socket shows whether the
server connected, and 169.254.169.254 needs no listener (connecting would end in
UNAVAILABLE or DEADLINE_EXCEEDED, not PERMISSION_DENIED). Names that must not
reach real DNS use the ``.test`` domain and a resolver the test hands the server.
"""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from cas.digest import Digest
from server.assets.config import AssetsConfig
from server.assets.policy import FetchPolicy
from tests.assets.conftest import asset_services
from tests.assets.helpers import blob_request, directory_request
from tests.assets.network import FakeDns, Listener
from tests.support.http_origin import HttpOrigin

DATA = b"served from loopback\n"
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def policy(**options: object) -> AssetsConfig:
    return AssetsConfig(policy=FetchPolicy(**options))  # type: ignore[arg-type]


async def test_loopback_is_refused_by_default_without_connecting(listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/file"
    async with asset_services(AssetsConfig()) as assets:
        blob = await assets.fetch.FetchBlob(blob_request(url))
        directory = await assets.fetch.FetchDirectory(directory_request(url))
    for response in (blob, directory):
        assert response.status.code == code_pb2.PERMISSION_DENIED
        assert response.status.message == (
            f"fetch of {url} refused: 127.0.0.1 is loopback "
            "(set [assets] allow_private_networks = true or list the host in allowed_hosts to permit it)"
        )
    assert not listener.connected()


@pytest.mark.parametrize("options", [{}, {"allow_private_networks": True}], ids=["default", "private-networks-allowed"])
async def test_cloud_metadata_is_refused_even_with_private_networks_allowed(options: dict[str, object]) -> None:
    async with asset_services(policy(**options)) as assets:
        response = await assets.fetch.FetchBlob(blob_request(METADATA, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert response.status.message == (
        f"fetch of {METADATA} refused: 169.254.169.254 is link-local (cloud metadata services answer there) "
        "(list the host in [assets] allowed_hosts to permit it)"
    )


@pytest.mark.parametrize(
    ("host", "address", "rule"),
    [
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1 (IPv4 127.0.0.1)", "loopback"),
        ("2130706433", "127.0.0.1", "loopback"),
        ("0x7f000001", "127.0.0.1", "loopback"),
        ("017700000001", "127.0.0.1", "loopback"),
        ("127.1", "127.0.0.1", "loopback"),
        ("0x7f.0.0.1", "127.0.0.1", "loopback"),
        ("127.0.0.1.", "127.0.0.1", "loopback"),
        ("[::1]", "::1", "loopback"),
        ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1 (IPv4 127.0.0.1)", "loopback"),
        ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe (IPv4 169.254.169.254)", "link-local"),
        ("2852039166", "169.254.169.254", "link-local"),
        ("0.0.0.0", "0.0.0.0", "the unspecified address"),
        ("[::]", "::", "the unspecified address"),
        ("10.1.2.3", "10.1.2.3", "a private address"),
        ("[fd00::1]", "fd00::1", "a private address"),
        ("100.64.0.1", "100.64.0.1", "a shared (carrier-grade NAT) address"),
    ],
)
async def test_every_spelling_of_a_forbidden_address_is_refused(listener: Listener, host: str, address: str, rule: str) -> None:
    url = f"http://{host}:{listener.port}/file"
    async with asset_services(AssetsConfig()) as assets:
        response = await assets.fetch.FetchBlob(blob_request(url, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert response.status.message.startswith(f"fetch of {url} refused: {address} is {rule}"), response.status.message
    assert not listener.connected()


async def test_a_name_that_resolves_to_loopback_is_refused(origin: HttpOrigin) -> None:
    origin.serve("/file", DATA)
    dns = FakeDns({"mirror.example.test": [["127.0.0.1"]]})
    url = f"http://mirror.example.test:{origin.port}/file"
    async with asset_services(AssetsConfig(), resolve=dns) as assets:
        response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.status.message == (
        f"fetch of {url} refused: mirror.example.test resolves to 127.0.0.1, which is loopback "
        "(set [assets] allow_private_networks = true or list the host in allowed_hosts to permit it)"
    )
    assert origin.requests == []


async def test_localhost_from_the_system_resolver_is_refused(listener: Listener) -> None:
    url = f"http://localhost:{listener.port}/file"
    async with asset_services(AssetsConfig()) as assets:
        response = await assets.fetch.FetchBlob(blob_request(url))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert "localhost resolves to" in response.status.message and "which is loopback" in response.status.message
    assert not listener.connected()


async def test_a_name_with_one_forbidden_address_is_refused_whole(origin: HttpOrigin) -> None:
    origin.serve("/file", DATA)
    dns = FakeDns({"mixed.test": [["127.0.0.1", "169.254.169.254"]]})
    async with asset_services(policy(allow_private_networks=True), resolve=dns) as assets:
        response = await assets.fetch.FetchBlob(blob_request(f"http://mixed.test:{origin.port}/file"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert "mixed.test resolves to 169.254.169.254, which is link-local" in response.status.message
    assert origin.requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(origin: HttpOrigin) -> None:
    """DNS rebinding: the name answers loopback (allowed here) and then the metadata
    address. One lookup per connection, checked and connected to, so the fetch reaches
    the origin; a second lookup between check and connect would go elsewhere."""
    origin.serve("/file", DATA)
    origin.serve("/other", DATA + b"!")
    dns = FakeDns({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    async with asset_services(policy(allow_private_networks=True), resolve=dns) as assets:
        response = await assets.fetch.FetchBlob(blob_request(f"http://rebind.test:{origin.port}/file", timeout=30))
        assert response.status.code == code_pb2.OK, response.status.message
        assert Digest.from_proto(response.blob_digest) == Digest.of(DATA)
        assert dns.lookups == ["rebind.test"]
    # A new connection (a new server: no kept-alive connection to reuse) looks the name up again.
    async with asset_services(policy(allow_private_networks=True), resolve=dns) as assets:
        again = await assets.fetch.FetchBlob(blob_request(f"http://rebind.test:{origin.port}/other", timeout=30))
    assert again.status.code == code_pb2.PERMISSION_DENIED
    assert "rebind.test resolves to 169.254.169.254, which is link-local" in again.status.message
    assert dns.lookups == ["rebind.test", "rebind.test"]
    assert origin.requests_for("/other") == []


@pytest.mark.parametrize(
    ("target", "complaint"),
    [
        ("http://127.0.0.1:{port}/secret", "127.0.0.1 is loopback"),
        ("http://internal.test:{port}/secret", "internal.test resolves to 127.0.0.1, which is loopback"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://[::ffff:7f00:1]:{port}/secret", "::ffff:7f00:1 (IPv4 127.0.0.1) is loopback"),
    ],
)
async def test_a_redirect_to_a_forbidden_address_is_refused_at_the_hop(origin: HttpOrigin, target: str, complaint: str) -> None:
    """The origin is trusted by name ("*" admits public hosts but lifts no address rule);
    where it redirects is judged by the default rules."""
    origin.serve("/secret", b"internal data")
    target = target.format(port=origin.port)
    origin.serve("/hop", redirect_to=target)
    dns = FakeDns({"origin.test": [["127.0.0.1"]], "internal.test": [["127.0.0.1"]]})
    start = f"http://origin.test:{origin.port}/hop"
    async with asset_services(policy(allowed_hosts=("*", "origin.test")), resolve=dns) as assets:
        response = await assets.fetch.FetchBlob(blob_request(start, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert response.status.message.startswith(f"fetch of {target} (redirected from {start}) refused: {complaint}"), response.status.message
    assert len(origin.requests_for("/hop")) == 1 and origin.requests_for("/secret") == []


async def test_a_redirect_to_the_metadata_address_is_refused_with_private_networks_allowed(origin: HttpOrigin) -> None:
    start = origin.serve("/hop", redirect_to=METADATA)
    async with asset_services(policy(allow_private_networks=True)) as assets:
        response = await assets.fetch.FetchBlob(blob_request(start, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.status.message.startswith(f"fetch of {METADATA} (redirected from {start}) refused: 169.254.169.254 is link-local")


async def test_allowed_hosts_opens_a_named_host_and_only_it(origin: HttpOrigin) -> None:
    url = origin.serve("/file", DATA)
    dns = FakeDns({"mirror.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    async with asset_services(policy(allowed_hosts=("127.0.0.1",)), resolve=dns) as assets:
        named = await assets.fetch.FetchBlob(blob_request(url))
        assert named.status.code == code_pb2.OK, named.status.message
    async with asset_services(policy(allowed_hosts=("*", "mirror.test")), resolve=dns) as assets:
        by_name = await assets.fetch.FetchBlob(blob_request(f"http://mirror.test:{origin.port}/file"))
        assert by_name.status.code == code_pb2.OK, by_name.status.message
        # "*" admits other.test but does not vouch for where it resolves.
        unnamed = await assets.fetch.FetchBlob(blob_request(f"http://other.test:{origin.port}/file"))
        assert unnamed.status.code == code_pb2.PERMISSION_DENIED
        assert "other.test resolves to 127.0.0.1, which is loopback" in unnamed.status.message


async def test_denied_hosts_also_match_resolved_addresses(origin: HttpOrigin) -> None:
    origin.serve("/file", DATA)
    dns = FakeDns({"alias.test": [["127.0.0.1"]]})
    async with asset_services(policy(allow_private_networks=True, denied_hosts=("127.0.0.1",)), resolve=dns) as assets:
        response = await assets.fetch.FetchBlob(blob_request(f"http://alias.test:{origin.port}/file"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert "alias.test resolves to 127.0.0.1, which is in [assets] denied_hosts" in response.status.message
    assert origin.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
async def test_the_servers_own_port_is_refused_whatever_the_settings(host: str) -> None:
    config = policy(allow_private_networks=True, allowed_hosts=("*", "127.0.0.1", "localhost", "0.0.0.0"))
    async with asset_services(config) as assets:
        url = f"http://{host}:{assets.port}/build.bazel.remote.asset.v1.Fetch/FetchBlob"
        response = await assets.fetch.FetchBlob(blob_request(url, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert f"is this machine, and port {assets.port} is this server's own port" in response.status.message


async def test_unresolvable_names_are_unavailable_not_refused() -> None:
    async with asset_services(AssetsConfig(), resolve=FakeDns({})) as assets:
        response = await assets.fetch.FetchBlob(blob_request("http://nowhere.test/file", timeout=30))
    assert response.status.code == code_pb2.UNAVAILABLE
    assert "nowhere.test" in response.status.message


@pytest.mark.parametrize("host", ["1.2.3.4.5", "99999999999"])
async def test_numeric_hosts_that_are_no_address_are_refused(host: str) -> None:
    """HTTP clients never resolve these as names, and no check can say where they go."""
    async with asset_services(AssetsConfig()) as assets:
        response = await assets.fetch.FetchBlob(blob_request(f"http://{host}/file", timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert response.status.message == f"fetch of http://{host}/file refused: {host} is not a valid IP address"
