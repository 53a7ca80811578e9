"""Shared fixtures: real redis-server, real gRPC servers on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from server.app import ReapiServer
from tests.support.processes import redis_server
from tests.support.servers import channel_to, config_for, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent




@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ReapiServer]:
    """The zero-config server (disk CAS and AC) with its data under tmp_path."""
    async with running_server(config_for(tmp_path=tmp_path)) as srv:
        yield srv


@pytest.fixture
async def channel(server: ReapiServer) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(server) as ch:
        yield ch
