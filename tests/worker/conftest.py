"""Worker test fixtures: real grpc.aio reapi servers (memory stores) and real workers.

``worker_in_process`` wires a worker exactly as ``reapi-worker`` does (worker.app)
and runs it in the test's event loop, so a test can look at its caches; the
process-level tests (killing, SIGTERM) use tests/support/worker_process.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from cas.memory import MemoryStore
from server.app import ReapiServer
from server.config import ServerConfig
from tests.support.servers import channel_to, config_for, running_server
from tests.worker.actions import ActionClient
from worker.app import Worker, build_worker
from worker.config import WorkerConfig
from worker.platform import PlatformProperties, detect_host


def memory_cas_stores() -> dict[str, dict[str, Any]]:
    return {
        "cas-memory": {"type": "memory", "max_size": "512MiB"},
        "cas": {"type": "verify", "inner": "cas-memory"},
        "ac": {"type": "memory", "max_size": "64MiB"},
    }


def execution_config(**execution: Any) -> ServerConfig:
    """Memory stores, any instance name, remote execution on (short session timeout for tests)."""
    section = {"bot_session_timeout": 3, **execution}
    return config_for(stores=memory_cas_stores(), raw={"execution": section})


@asynccontextmanager
async def worker_in_process(server: ReapiServer, root: Path, properties: PlatformProperties | None = None,
                            **overrides: Any) -> AsyncIterator[Worker]:
    """A real worker serving ``server`` until the block ends (then stopped gracefully)."""
    config = replace(
        WorkerConfig(), server=f"grpc://{server.address}", concurrency=2, cache_dir=root / "cache",
        work_dir=root / "work", kill_grace=0.5, drain_timeout=5.0, bot_id=f"test-worker-{root.name}",
    )
    worker = await build_worker(replace(config, **overrides), properties or detect_host())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.daemon.connected.wait(), 60)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


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


@pytest.fixture
async def exec_server() -> AsyncIterator[ReapiServer]:
    async with running_server(execution_config()) as srv:
        yield srv


@pytest.fixture
async def worker(exec_server: ReapiServer, tmp_path: Path) -> AsyncIterator[Worker]:
    async with worker_in_process(exec_server, tmp_path / "worker") as w:
        yield w


@pytest.fixture
async def client(exec_server: ReapiServer) -> AsyncIterator[ActionClient]:
    async with channel_to(exec_server) as ch:
        yield ActionClient(ch)
