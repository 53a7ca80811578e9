"""Fixtures for the Remote Asset tests: a real HTTP origin, and the Fetch and Push
services on a real grpc.aio server over real stores, with a clock the test moves."""

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
from server.config import WILDCARD_INSTANCE, InstanceConfig
from server.instances import Instance, InstanceRegistry
from server.services.fetch import FetchService
from server.services.push import PushService
from tests.support.http_origin import HttpOrigin

START = 1_800_000_000.0


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


@asynccontextmanager
async def asset_services(
    config: AssetsConfig | None = None,
    index_store: BlobStore | None = None,
    cas: BlobStore | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[AssetHarness]:
    """Fetch + Push on 127.0.0.1:0 over ``cas`` (verifying, in memory by default)."""
    config = config or AssetsConfig()
    cas = cas or VerifyingStore(MemoryStore(1 << 30))
    index_store = index_store or MemoryStore(64 << 20, name="assets")
    clock = clock or FakeClock()
    instances = InstanceRegistry([Instance(InstanceConfig(WILDCARD_INSTANCE, "cas", "ac"), cas, MemoryStore(1 << 20))])
    parts = build_assets(config, index_store, clock)
    server = grpc.aio.server()
    asset_grpc.add_FetchServicer_to_server(FetchService(instances, parts.fetcher), server)
    asset_grpc.add_PushServicer_to_server(PushService(instances, parts.pusher), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield AssetHarness(asset_grpc.FetchStub(channel), asset_grpc.PushStub(channel), cas, index_store, parts, clock)
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
