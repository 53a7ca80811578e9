"""Storage nodes for tests: reapi servers with a storage-only config.

A storage node serves the CAS (and ByteStream) of its own local stores and nothing
else: no execution, no local worker. Frontends reach it through a ``grpc`` store,
usually under a ``sharding`` or ``mirrored`` one. Tests run nodes in-process
(``running_storage_nodes``, for the store contract) or as real processes
(``storage_node_process``, to kill and restart them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from server.config import WILDCARD_INSTANCE, InstanceConfig, ServerConfig
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.servers import running_server


def storage_node_stores(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """A verified CAS (on disk under ``root``, else in memory) and a tiny unused action cache."""
    if root is None:
        inner: dict[str, Any] = {"type": "memory", "max_size": "256MiB"}
    else:
        inner = {"type": "disk", "path": str(root / "cas"), "max_size": "1GiB"}
    return {
        "blobs": inner,
        "cas": {"type": "verify", "inner": "blobs"},
        "ac": {"type": "memory", "max_size": "1MiB"},
    }


def storage_node_config(root: Path | None = None) -> dict[str, Any]:
    """The whole config file of a storage node (a dict, as TOML would give it)."""
    return {
        "server": {"listen": "127.0.0.1:0"},
        "stores": storage_node_stores(root),
        "instances": [{"name": WILDCARD_INSTANCE, "cas": "cas", "ac": "ac"}],
        "execution": {"enabled": False},
    }


@asynccontextmanager
async def running_storage_nodes(count: int) -> AsyncIterator[list[str]]:
    """``count`` in-process storage nodes with memory CASes; their ``grpc://`` addresses."""
    async with AsyncExitStack() as stack:
        addresses = []
        for _ in range(count):
            config = ServerConfig(
                listen="127.0.0.1:0",
                stores=storage_node_stores(),
                instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
                raw={"execution": {"enabled": False}},
            )
            node = await stack.enter_async_context(running_server(config))
            addresses.append(f"grpc://{node.address}")
        yield addresses


@contextmanager
def storage_node_process(workdir: Path, listen: str = "127.0.0.1:0",
                         security: dict[str, Any] | None = None) -> Iterator[ServerProcess]:
    """A storage node as a real process, its CAS on disk under ``workdir/data`` (so a
    restart on the same ``listen`` address finds its blobs again). ``security``: the
    ``[server]`` subtables that secure it (``{"tls": {...}, "auth": {...}}``)."""
    config = server_config(workdir, stores=storage_node_stores(workdir / "data"),
                           server={"listen": listen, **(security or {})}, execution={"enabled": False})
    with reapi_server_process(workdir, config) as node:
        yield node
