"""The asset services inside the real reapi server: zero config, restarts, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.rpc import code_pb2

from cas.config import ConfigError
from cas.digest import Digest
from cas.memory import MemoryStore
from cas.decorators.verify import VerifyingStore
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.assets.config import AssetsConfig
from server.assets.limits import UnpackLimits
from tests.assets.helpers import blob_request, sri
from tests.support.http_origin import HttpOrigin
from tests.support.servers import channel_to, config_for, running_server

DATA = b"persisted across restarts\n" * 100
# The origins here listen on 127.0.0.1, which a server reaches only when told it may.
LOCAL_ORIGINS = {"assets": {"allow_private_networks": True}}


async def test_zero_config_index_survives_a_restart(tmp_path: Path) -> None:
    origin = HttpOrigin().start()
    url = origin.serve("/file.txt", DATA)
    config = config_for(tmp_path=tmp_path, raw=LOCAL_ORIGINS)
    async with running_server(config) as server, channel_to(server) as channel:
        response = await asset_grpc.FetchStub(channel).FetchBlob(blob_request(url))
        assert response.status.code == code_pb2.OK, response.status.message
        digest = Digest.from_proto(response.blob_digest)
        # Clients read the fetched blob from the CAS, as Bazel does, over ByteStream.
        chunks = bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=f"blobs/{digest.hash}/{digest.size_bytes}"))
        assert b"".join([c.data async for c in chunks]) == DATA
    origin.stop()
    assert (tmp_path / "assets").is_dir()
    async with running_server(config_for(tmp_path=tmp_path, raw=LOCAL_ORIGINS)) as server, channel_to(server) as channel:
        again = await asset_grpc.FetchStub(channel).FetchBlob(blob_request(url))
        assert again.status.code == code_pb2.OK, again.status.message
        assert again.blob_digest == response.blob_digest


async def test_checksum_index_survives_a_restart(tmp_path: Path) -> None:
    with HttpOrigin() as origin:
        url = origin.serve("/file.txt", DATA)
        async with running_server(config_for(tmp_path=tmp_path, raw=LOCAL_ORIGINS)) as server, channel_to(server) as channel:
            await asset_grpc.FetchStub(channel).FetchBlob(blob_request(url))
    async with running_server(config_for(tmp_path=tmp_path)) as server, channel_to(server) as channel:
        hit = await asset_grpc.FetchStub(channel).FetchBlob(blob_request("http://127.0.0.1:9/moved.txt", q={"checksum.sri": sri(DATA)}))
        assert hit.status.code == code_pb2.OK, hit.status.message


async def test_the_zero_config_server_refuses_loopback_and_metadata_fetches(tmp_path: Path) -> None:
    """Acceptance 6 against the real server with no [assets] settings: the defaults refuse."""
    with HttpOrigin() as origin:
        url = origin.serve("/file.txt", DATA)
        async with running_server(config_for(tmp_path=tmp_path)) as server, channel_to(server) as channel:
            fetch = asset_grpc.FetchStub(channel)
            for uri, complaint in [
                (url, "127.0.0.1 is loopback"),
                ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
            ]:
                response = await fetch.FetchBlob(blob_request(uri, timeout=30))
                assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
                assert response.status.message.startswith(f"fetch of {uri} refused: {complaint}")
        assert origin.requests == []


async def test_the_server_refuses_to_fetch_from_its_own_port(tmp_path: Path) -> None:
    async with running_server(config_for(tmp_path=tmp_path, raw=LOCAL_ORIGINS)) as server, channel_to(server) as channel:
        own = f"http://127.0.0.1:{server.port}/"
        response = await asset_grpc.FetchStub(channel).FetchBlob(blob_request(own, timeout=30))
    assert response.status.code == code_pb2.PERMISSION_DENIED, response.status.message
    assert f"port {server.port} is this server's own port" in response.status.message


def test_assets_config_parsing() -> None:
    stores = {"assets": MemoryStore(1), "cas": VerifyingStore(MemoryStore(1))}
    parsed = AssetsConfig.parse(
        {"allowed_hosts": ["*.example.com"], "max_download_size": "1GiB", "default_timeout": "2m", "allowed_schemes": ["https"]}, stores
    )
    assert parsed is not None
    assert parsed.policy.max_download_size == 1 << 30 and parsed.default_timeout == 120
    assert not parsed.policy.allow_private_networks and parsed.limits == UnpackLimits()  # the safe defaults
    opened = AssetsConfig.parse(
        {"allow_private_networks": True, "max_unpacked_size": "8GiB", "max_compression_ratio": 0, "max_archive_entries": 10}, stores
    )
    assert opened is not None and opened.policy.allow_private_networks
    assert opened.limits == UnpackLimits(max_unpacked_size=8 << 30, max_entries=10, max_compression_ratio=0)
    assert parsed.policy.allowed_schemes == {"https"}
    assert parsed.policy.host_allowed("a.example.com") and not parsed.policy.host_allowed("example.org")
    assert AssetsConfig.parse({}, {"cas": stores["cas"]}) is None  # no [assets], no "assets" store: off
    assert AssetsConfig.parse({"enabled": False}, stores) is None


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"index": "nowhere"}, "'nowhere' is not defined"),
        ({"index": "cas"}, "verify store"),
        ({"allowed_schemes": ["gopher"]}, "unknown schemes"),
        ({"max_redirects": -1}, "max_redirects"),
        ({"default_timeout": "soon"}, "not a duration"),
        ({"max_timeout": 0}, "must be positive"),
        ({"allowed_hosts": "example.com"}, "list of strings"),
        ({"colour": "blue"}, "unknown key 'colour'"),
        ({"allow_private_networks": "yes"}, "expected true or false"),
        ({"max_unpacked_size": "lots"}, "max_unpacked_size"),
        ({"max_compression_ratio": -1}, "max_compression_ratio"),
    ],
)
def test_assets_config_errors_name_the_key(section: dict[str, object], complaint: str) -> None:
    stores = {"assets": MemoryStore(1), "cas": VerifyingStore(MemoryStore(1))}
    with pytest.raises(ConfigError, match=complaint):
        AssetsConfig.parse(section, stores)
