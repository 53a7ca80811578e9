"""Fixtures for the storage service tests: a real grpc.aio server with memory stores.

Memory stores keep these tests fast and let a test look at what is stored (to show
that bad input changed nothing). The CAS is wrapped in a VerifyingStore, as in every
real configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cas.memory import MemoryStore
from server.app import ReapiServer
from server.config import InstanceConfig
from tests.server.client import StorageClient, memory_stores
from tests.support.servers import channel_to, config_for, running_server


@pytest.fixture
async def storage_server() -> AsyncIterator[ReapiServer]:
    """Serves any instance name from memory stores."""
    async with running_server(config_for(stores=memory_stores())) as srv:
        yield srv


@pytest.fixture
async def client(storage_server: ReapiServer) -> AsyncIterator[StorageClient]:
    async with channel_to(storage_server) as channel:
        yield StorageClient(channel)


@pytest.fixture
def cas_memory(storage_server: ReapiServer) -> MemoryStore:
    store = storage_server.stores["cas-memory"]
    assert isinstance(store, MemoryStore)
    return store


@pytest.fixture
async def named_instances_server() -> AsyncIterator[ReapiServer]:
    """Two named instances (one with a slash), no wildcard; 'ro' refuses AC updates."""
    instances = [
        InstanceConfig(name="main", cas="cas", ac="ac"),
        InstanceConfig(name="team/ro", cas="cas", ac="ac", ac_update_enabled=False),
    ]
    async with running_server(config_for(stores=memory_stores(), instances=instances)) as srv:
        yield srv


@pytest.fixture
async def named_client(named_instances_server: ReapiServer) -> AsyncIterator[StorageClient]:
    async with channel_to(named_instances_server) as channel:
        yield StorageClient(channel)
