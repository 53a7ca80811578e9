"""A frontend's links to its storage nodes, secured: TLS, a token, client certificates.

Storage nodes here require TLS and authentication like any server off loopback:
real ``reapi-server`` processes (or in-process servers) whose token file or
certificate rule admits one identity, the frontends', with exactly ``read`` and
``write``. The frontend (in-process, its config read from TOML as an operator
writes it) reaches them through ``grpc`` stores with ``grpcs://``, ``tls_ca`` and a
``token_file`` (or ``tls_cert``/``tls_key``), under a ``sharding`` or ``mirrored``
store; clients talk to the frontend only. What is refused names the node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from cas.config import ConfigError
from cas.config.factory import build_stores
from cas.digest import Digest
from cas.errors import ReapiError
from cas.remote.store import RemoteStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.app import ReapiServer
from server.auth.config import AuthConfig, CertificateRule, TlsConfig
from server.config import WILDCARD_INSTANCE, InstanceConfig, ServerConfig, load_config
from tests.server.client import StorageClient, expect_error
from tests.support import toml_writer
from tests.support.certificates import TestPki
from tests.support.servers import channel_to, running_server
from tests.support.storage_nodes import storage_node_process, storage_node_stores
from tests.support.tokens import TokenFile, write_token_file
from tests.support.waiting import eventually

FRONTEND_PERMISSIONS = ["read", "write"]  # all a frontend needs on a storage node (docs/SECURITY.md)


def node_security(pki: TestPki, tokens: TokenFile, name: str) -> dict[str, Any]:
    pair = pki.server_certificate(file_stem=f"{name}-server")
    return {"tls": {"cert": str(pair.cert), "key": str(pair.key)}, "auth": {"tokens": str(tokens.path)}}


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def node_tokens(tmp_path: Path) -> TokenFile:
    """The storage nodes' token file: the frontends' identity only."""
    return TokenFile(tmp_path / "node-tokens.toml")


@pytest.fixture
def frontend_token(node_tokens: TokenFile) -> str:
    """The token of the frontends' identity, in the nodes' token file before they start."""
    return node_tokens.add("frontends", FRONTEND_PERMISSIONS, instances=[""])  # as deploy/kubernetes/README.md


@pytest.fixture
def nodes(tmp_path: Path, pki: TestPki, node_tokens: TokenFile, frontend_token: str) -> Iterator[list[str]]:
    """Two storage-node processes requiring TLS and a token; their ``grpcs://`` addresses."""
    with ExitStack() as stack:
        addresses = []
        for name in ("storage-1", "storage-2"):
            node = stack.enter_context(storage_node_process(tmp_path / name, security=node_security(pki, node_tokens, name)))
            addresses.append(f"grpcs://{node.address}")
        yield addresses


def frontend_toml(tmp_path: Path, addresses: list[str], top: dict[str, Any], link: dict[str, Any]) -> Path:
    """The frontend's config file: a ``grpc`` store per node with ``link``'s keys, ``cas`` = ``top``."""
    stores: dict[str, Any] = {f"storage-{i}": {"type": "grpc", "address": address, **link}
                              for i, address in enumerate(addresses, start=1)}
    stores |= {"cas": top, "ac": {"type": "memory", "max_size": "1MiB"}}
    config = {"server": {"listen": "127.0.0.1:0"}, "stores": stores,
              "instances": [{"name": WILDCARD_INSTANCE, "cas": "cas", "ac": "ac"}], "execution": {"enabled": False}}
    path = tmp_path / "frontend.toml"
    path.write_text(toml_writer.dumps(config))
    return path


@asynccontextmanager
async def frontend(path: Path) -> AsyncIterator[tuple[ReapiServer, StorageClient]]:
    async with running_server(load_config(path)) as server, channel_to(server) as channel:
        yield server, StorageClient(channel)


def blobs(count: int, salt: str) -> dict[Digest, bytes]:
    datas = [f"{salt} blob {i} ".encode() * 30 for i in range(count)]
    return {Digest.of(data): data for data in datas}


async def batch_update_status(client: StorageClient, data: bytes) -> Any:
    """The per-blob status of uploading ``data`` with BatchUpdateBlobs."""
    request = re_pb2.BatchUpdateBlobsRequest(
        requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=Digest.of(data).to_proto(), data=data)])
    return (await client.cas.BatchUpdateBlobs(request)).responses[0].status


SHARDED = {"type": "sharding", "shards": [{"store": "storage-1"}, {"store": "storage-2"}]}
MIRRORED = {"type": "mirrored", "a": "storage-1", "b": "storage-2"}


async def test_a_sharded_frontend_stores_on_tls_nodes_with_a_token_of_read_and_write(
    tmp_path: Path, pki: TestPki, frontend_token: str, nodes: list[str]
) -> None:
    token_path = write_token_file(tmp_path / "frontend" / "storage.token", frontend_token)
    link = {"tls_ca": str(pki.ca_cert), "token_file": str(token_path)}
    async with frontend(frontend_toml(tmp_path, nodes, SHARDED, link)) as (server, client):
        values = blobs(30, "sharded")
        for data in values.values():
            await client.upload(data)  # BatchUpdateBlobs on the nodes
        big = os.urandom(3 << 20)  # ByteStream Write and Read on the nodes
        await client.write(big)
        everything = [*values, Digest.of(big)]
        assert await client.missing(everything) == set()
        for digest, data in values.items():
            assert await client.read(digest) == data
        assert await client.read(Digest.of(big)) == big
        # Each node holds its share, and it is reachable only with the credentials.
        shard_of = server.stores["cas"].shard_for  # type: ignore[attr-defined]
        for name, address in zip(("storage-1", "storage-2"), nodes):
            node = RemoteStore.connect(address, tls_ca=pki.ca_cert, token_file=token_path, name=name)
            try:
                mine = [d for d in everything if shard_of(d).name == name]
                assert mine and await node.find_missing(mine) == set()
            finally:
                await node.aclose()


async def test_a_mirrored_frontend_presents_a_client_certificate_to_nodes_requiring_mtls(tmp_path: Path, pki: TestPki) -> None:
    server_pair = pki.server_certificate()
    frontend_pair = pki.client_certificate("reapi-frontend")
    node_config = ServerConfig(
        listen="127.0.0.1:0", stores=storage_node_stores(),
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
        tls=TlsConfig(cert=server_pair.cert, key=server_pair.key, client_ca=pki.ca_cert),
        auth=AuthConfig(certificates=[CertificateRule(subject="reapi-frontend", permissions=FRONTEND_PERMISSIONS)]),
        raw={"execution": {"enabled": False}},
    )
    async with AsyncExitStack() as stack:
        addresses = [f"grpcs://{(await stack.enter_async_context(running_server(node_config))).address}"
                     for _ in range(2)]
        link = {"tls_ca": str(pki.ca_cert), "tls_cert": str(frontend_pair.cert), "tls_key": str(frontend_pair.key)}
        server, client = await stack.enter_async_context(frontend(frontend_toml(tmp_path, addresses, MIRRORED, link)))
        values = blobs(20, "mirrored")
        for data in values.values():
            await client.upload(data)
        big = os.urandom(2 << 20)
        await client.write(big)
        assert await client.missing([*values, Digest.of(big)]) == set()
        assert await client.read(Digest.of(big)) == big
        for name in ("storage-1", "storage-2"):  # every value on both nodes
            assert await server.stores[name].find_missing([*values, Digest.of(big)]) == set()
        # Without the client certificate a node closes the connection at the handshake.
        bare = RemoteStore.connect(addresses[0], tls_ca=pki.ca_cert, name="no certificate")
        try:
            with pytest.raises(ReapiError) as refused:
                await bare.find_missing(list(values))
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE and addresses[0] in refused.value.message
        finally:
            await bare.aclose()


async def test_a_wrong_token_is_unavailable_naming_the_node_and_never_logged(
    tmp_path: Path, pki: TestPki, nodes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-" + "x" * 30
    token_path = write_token_file(tmp_path / "frontend" / "storage.token", wrong)
    link = {"tls_ca": str(pki.ca_cert), "token_file": str(token_path)}
    caplog.set_level(logging.DEBUG)
    async with frontend(frontend_toml(tmp_path, nodes[:1], {"type": "verify", "inner": "storage-1"}, link)) as (_, client):
        data = b"refused " * 100
        message = await expect_error(client.missing([Digest.of(data)]), grpc.StatusCode.UNAVAILABLE)
        assert nodes[0] in message and "refused this server's credentials" in message and "unknown token" in message
        status = await batch_update_status(client, data)
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0] and nodes[0] in status.message
    assert wrong not in caplog.text and wrong not in message


async def test_an_identity_without_write_is_permission_denied_naming_the_node(
    tmp_path: Path, pki: TestPki, node_tokens: TokenFile, nodes: list[str]
) -> None:
    token = node_tokens.add("read-only", ["read"])
    token_path = write_token_file(tmp_path / "frontend" / "storage.token", token)
    link = {"tls_ca": str(pki.ca_cert), "token_file": str(token_path)}
    async with frontend(frontend_toml(tmp_path, nodes[:1], {"type": "verify", "inner": "storage-1"}, link)) as (_, client):
        data = b"read only " * 100

        async def the_node_knows_the_token() -> None:  # it re-reads its token file within half a second
            try:
                assert await client.missing([Digest.of(data)]) == {Digest.of(data)}
            except grpc.aio.AioRpcError as exc:
                raise AssertionError(exc.details()) from None

        await eventually(the_node_knows_the_token)
        status = await batch_update_status(client, data)
        assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert nodes[0] in status.message and "identity 'read-only'" in status.message
        assert "lacks the write or worker permission" in status.message


async def test_a_frontend_without_the_ca_is_refused_at_the_handshake_naming_the_node(
    tmp_path: Path, frontend_token: str, nodes: list[str]
) -> None:
    token_path = write_token_file(tmp_path / "frontend" / "storage.token", frontend_token)
    link = {"token_file": str(token_path)}  # the system's roots do not know the test CA
    async with frontend(frontend_toml(tmp_path, nodes, SHARDED, link)) as (_, client):
        data = b"untrusted " * 100
        message = await expect_error(client.missing([Digest.of(data)]), grpc.StatusCode.UNAVAILABLE)
        assert any(address in message for address in nodes), message


async def test_the_frontends_token_rotates_without_a_restart(
    tmp_path: Path, pki: TestPki, node_tokens: TokenFile, frontend_token: str, nodes: list[str]
) -> None:
    old = frontend_token
    token_path = write_token_file(tmp_path / "frontend" / "storage.token", old)
    link = {"tls_ca": str(pki.ca_cert), "token_file": str(token_path)}
    async with frontend(frontend_toml(tmp_path, nodes, MIRRORED, link)) as (_, client):
        first = await client.upload(b"before the rotation " * 50)
        new = node_tokens.add("frontends", FRONTEND_PERMISSIONS)  # the nodes accept both for a while
        replacement = token_path.with_suffix(".new")
        write_token_file(replacement, new)
        os.replace(replacement, token_path)  # as a Secret update or a deploy tool does
        node_tokens.remove("frontends")
        node_tokens.add("frontends", FRONTEND_PERMISSIONS, token=new)  # the old token revoked

        async def only_the_new_token_works() -> None:
            with_old = RemoteStore.connect(nodes[0], tls_ca=pki.ca_cert,
                                           token_file=write_token_file(tmp_path / "old.token", old))
            try:
                await with_old.find_missing([first])
            except ReapiError as refused:
                assert refused.code == grpc.StatusCode.UNAVAILABLE and "unknown token" in refused.message
            else:
                raise AssertionError("the node still accepts the old token")
            finally:
                await with_old.aclose()

        await eventually(only_the_new_token_works)
        second = await client.upload(b"after the rotation " * 50)
        assert await client.missing([first, second]) == set()
        assert await client.read(first) == b"before the rotation " * 50


# -- what the frontend refuses to start with: one line naming the store and the file --


def link_spec(address: str = "grpcs://storage:8980", **keys: Any) -> dict[str, Any]:
    return {"node": {"type": "grpc", "address": address, **{k: str(v) for k, v in keys.items()}}}


async def config_error(specs: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        stores = await build_stores(specs)
        for store in stores.values():
            await store.aclose()
    message = str(info.value)
    assert "\n" not in message
    return message


async def test_link_files_that_cannot_be_used_are_one_line_errors(tmp_path: Path, pki: TestPki) -> None:
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello\n")
    client = pki.client_certificate("reapi-frontend")
    other = pki.client_certificate("someone-else")
    missing = tmp_path / "missing"

    message = await config_error(link_spec(tls_ca=missing))
    assert "store 'node'" in message and f"tls_ca {missing}: No such file or directory" in message
    assert f"tls_ca {not_pem}: not PEM certificates" in await config_error(link_spec(tls_ca=not_pem))
    message = await config_error(link_spec(tls_ca=pki.ca_cert, tls_cert=client.cert, tls_key=other.key))
    assert f"tls_key {other.key} does not belong to tls_cert {client.cert}" in message
    assert "tls_cert and tls_key go together" in await config_error(link_spec(tls_cert=client.cert))
    assert "need a grpcs:// address" in await config_error(link_spec("grpc://storage:8980", tls_ca=pki.ca_cert))
    message = await config_error(link_spec(tls_ca=pki.ca_cert, token_file=missing))
    assert "store 'node'" in message and f"token file {missing}: No such file or directory" in message
