"""Every example in deploy/ works: server configs start a real server that answers,
the worker config parses, the systemd units start programs that exist."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.app import ReapiServer
from server.auth.tokens import TokenTable
from server.config import WILDCARD_INSTANCE, load_config, parse_config
from server.local_worker import parse_local_worker
from tests.conftest import REPO_ROOT
from tests.support.certificates import TestPki
from tests.support.servers import channel_to, running_server
from tests.support.tokens import TokenFile, write_token_file
from worker.config import load_worker_config
from cas.security.bearer import BearerToken

DEPLOY = REPO_ROOT / "deploy"
SERVER_CONFIGS = sorted(p for p in (DEPLOY / "configs").glob("*.toml") if "stores" in tomllib.loads(p.read_text()))


def localised(data: dict[str, Any], tmp_path: Path, redis_url: str) -> dict[str, Any]:
    """The same config with its paths under tmp_path, its Redis the test's, port 0."""
    data = dict(data, server=dict(data.get("server", {}), listen="127.0.0.1:0"))
    stores = {}
    for name, spec in data["stores"].items():
        spec = dict(spec)
        if "path" in spec:
            spec["path"] = str(tmp_path / name)
        if "url" in spec:
            spec["url"] = redis_url
            spec["key_prefix"] = f"{tmp_path.name}:{spec.get('key_prefix', name)}"
        stores[name] = spec
    data["stores"] = stores
    return localised_security(data, tmp_path)


def localised_security(data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A generated certificate and key for [server.tls], a token file with one token
    allowed everything for [server.auth] (written next to it as ``client.token``)."""
    server = dict(data["server"])
    if "tls" in server:
        pki = TestPki(tmp_path / "pki")
        pair = pki.server_certificate()
        server["tls"] = dict(server["tls"], cert=str(pair.cert), key=str(pair.key))
    if "tokens" in server.get("auth", {}):
        tokens = TokenFile(tmp_path / "tokens.toml")
        token = tokens.add("deploy-test", ["read", "write", "ac-write", "execute", "worker", "admin"])
        write_token_file(tmp_path / "client.token", token)
        server["auth"] = dict(server["auth"], tokens=str(tokens.path))
    return dict(data, server=server)


@asynccontextmanager
async def client_channel(server: ReapiServer, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """Plain, or TLS trusting the generated CA and sending the generated token."""
    if not server.config.tls.enabled:
        async with channel_to(server) as channel:
            yield channel
        return
    interceptors = BearerToken(tmp_path / "client.token").interceptors() if (tmp_path / "client.token").exists() else None
    credentials = grpc.ssl_channel_credentials((tmp_path / "pki" / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(server.address, credentials, interceptors=interceptors) as channel:
        yield channel


def test_there_are_examples() -> None:
    assert {p.name for p in SERVER_CONFIGS} >= {"all-in-one.toml", "cache-only.toml", "redis-tiered.toml"}


@pytest.mark.parametrize("path", SERVER_CONFIGS, ids=lambda p: p.name)
async def test_server_config_starts_and_serves_each_instance(path: Path, tmp_path: Path, redis_url: str) -> None:
    data = tomllib.loads(path.read_text())
    load_config(path)  # the file as written: every section and key known, every value valid
    parse_local_worker(data.get("local_worker", {}), zero_config=False)  # its keys are valid
    config = parse_config(localised(data, tmp_path, redis_url))
    execution_wanted = data.get("execution", {}).get("enabled", True)
    async with running_server(config) as server, client_channel(server, tmp_path) as channel:
        capabilities = re_grpc.CapabilitiesStub(channel)
        for instance in config.instances:
            name = "any/name" if instance.name == WILDCARD_INSTANCE else instance.name
            answer = await capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name=name))
            assert answer.execution_capabilities.exec_enabled == execution_wanted
            assert answer.cache_capabilities.action_cache_update_capabilities.update_enabled == instance.ac_update_enabled
            cas = re_grpc.ContentAddressableStorageStub(channel)
            blob = f"example {path.name} {name}".encode()
            digest = re_pb2.Digest(hash=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob))
            stored = await cas.BatchUpdateBlobs(
                re_pb2.BatchUpdateBlobsRequest(instance_name=name, requests=[{"digest": digest, "data": blob}])
            )
            assert stored.responses[0].status.code == grpc.StatusCode.OK.value[0]
            read = await cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(instance_name=name, digests=[digest]))
            assert read.responses[0].data == blob


def test_the_example_token_file_parses_and_grants_nothing_as_shipped(tmp_path: Path) -> None:
    tokens = TokenTable(DEPLOY / "configs" / "tokens.example.toml")
    assert tokens.lookup("") is None and tokens.lookup("replace-me") is None  # all-zero hashes match no token
    secure = load_config(DEPLOY / "configs" / "secure.toml")
    assert secure.tls.enabled and secure.auth.tokens is not None


def test_worker_config_parses() -> None:
    config = load_worker_config(DEPLOY / "configs" / "worker.toml")
    assert config.properties.get("pool") == ["default"]


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_systemd_units_start_our_console_scripts(unit: Path) -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    exec_start = re.search(r"^ExecStart=(\S+)(.*)$", unit.read_text(), re.MULTILINE)
    assert exec_start is not None
    assert Path(exec_start.group(1)).name in scripts
    assert "--config" in exec_start.group(2)
