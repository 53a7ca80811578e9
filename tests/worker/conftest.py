"""Worker test fixtures: a real grpc.aio reapi server with memory stores, and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cas.memory import MemoryStore
from server.app import ReapiServer
from tests.support.servers import channel_to, config_for, running_server


def memory_cas_stores() -> dict[str, dict[str, Any]]:
    return {
        "cas-memory": {"type": "memory", "max_size": "512MiB"},
        "cas": {"type": "verify", "inner": "cas-memory"},
        "ac": {"type": "memory", "max_size": "64MiB"},
    }


@pytest.fixture
async def cas_server() -> AsyncIterator[ReapiServer]:
    async with running_server(config_for(stores=memory_cas_stores())) as srv:
        yield srv


@pytest.fixture
async def cas_channel(cas_server: ReapiServer) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(cas_server) as ch:
        yield ch


@pytest.fixture
def server_cas(cas_server: ReapiServer) -> MemoryStore:
    """The memory store behind the server's CAS, to look at what really arrived."""
    store = cas_server.stores["cas-memory"]
    assert isinstance(store, MemoryStore)
    return store
