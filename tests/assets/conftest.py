"""Fixtures for the Remote Asset tests: a real HTTP origin, and the Fetch and Push
services on a real grpc.aio server over real stores, with a clock the test moves.

The origins listen on 127.0.0.1, which the server refuses to fetch from by default,
so the harness's default config says ``allow_private_networks = true`` (LOCAL_ORIGINS);
tests of the network rules pass configs of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest

from cas.memory import MemoryStore
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from server.assets.assembly import AssetParts, build_assets
from server.assets.config import AssetsConfig
from server.assets.guard import Resolve, system_resolve
from server.assets.policy import FetchPolicy
from server.config import WILDCARD_INSTANCE, InstanceConfig
from server.instances import Instance, InstanceRegistry
from server.services.fetch import FetchService
from server.services.push import PushService
from tests.assets.network import Listener
from tests.support.http_origin import HttpOrigin

START = 1_800_000_000.0
# The test origins are on loopback: allowed explicitly, as an operator would.
LOCAL_ORIGINS = FetchPolicy(allow_private_networks=True)


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class AssetHarness:
    fetch: asset_grpc.FetchStub
    push: asset_grpc.PushStub
    cas: BlobStore
    index_store: BlobStore
    parts: AssetParts
    clock: FakeClock = field(default_factory=FakeClock)
    port: int = 0  # the services' own port


@asynccontextmanager
async def asset_services(
    config: AssetsConfig | None = None,
    index_store: BlobStore | None = None,
    cas: BlobStore | None = None,
    clock: FakeClock | None = None,
    resolve: Resolve = system_resolve,
) -> AsyncIterator[AssetHarness]:
    """Fetch + Push on 127.0.0.1:0 over ``cas`` (verifying, in memory by default);
    ``resolve`` stands in for DNS."""
    config = config or AssetsConfig(policy=LOCAL_ORIGINS)
    cas = cas or VerifyingStore(MemoryStore(1 << 30))
    index_store = index_store or MemoryStore(64 << 20, name="assets")
    clock = clock or FakeClock()
    instances = InstanceRegistry([Instance(InstanceConfig(WILDCARD_INSTANCE, "cas", "ac"), cas, MemoryStore(1 << 20))])
    parts = build_assets(config, index_store, clock, resolve)
    server = grpc.aio.server()
    asset_grpc.add_FetchServicer_to_server(FetchService(instances, parts.fetcher), server)
    asset_grpc.add_PushServicer_to_server(PushService(instances, parts.pusher), server)
    port = server.add_insecure_port("127.0.0.1:0")
    parts.serving_on(port)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield AssetHarness(
                asset_grpc.FetchStub(channel), asset_grpc.PushStub(channel), cas, index_store, parts, clock, port
            )
    finally:
        await server.stop(None)
        await parts.aclose()


@pytest.fixture
def origin() -> Iterator[HttpOrigin]:
    with HttpOrigin() as running:
        yield running


@pytest.fixture
async def assets() -> AsyncIterator[AssetHarness]:
    async with asset_services() as harness:
        yield harness


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.socket.close()
