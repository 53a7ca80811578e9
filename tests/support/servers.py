"""Start a real reapi gRPC server inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from server.app import ReapiServer, start_server
from server.config import WILDCARD_INSTANCE, InstanceConfig, ServerConfig, default_stores


def config_for(
    stores: dict[str, dict[str, Any]] | None = None,
    instances: list[InstanceConfig] | None = None,
    tmp_path: Path | None = None,
    **server: Any,
) -> ServerConfig:
    """A config listening on 127.0.0.1:0; by default the zero-config stores under tmp_path."""
    if stores is None:
        assert tmp_path is not None, "give stores or a tmp_path for the default disk stores"
        stores = default_stores(tmp_path)
    return ServerConfig(
        listen="127.0.0.1:0",
        stores=stores,
        instances=instances or [InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
        **server,
    )


@asynccontextmanager
async def running_server(config: ServerConfig) -> AsyncIterator[ReapiServer]:
    server = await start_server(config)
    try:
        yield server
    finally:
        await server.stop(grace=None)


@asynccontextmanager
async def channel_to(server: ReapiServer) -> AsyncIterator[grpc.aio.Channel]:
    limit = 64 << 20
    async with grpc.aio.insecure_channel(
        server.address,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    ) as channel:
        yield channel
