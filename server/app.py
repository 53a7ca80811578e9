"""reapi-server: the composition root. Every part of the server is wired here.

    reapi-server                      # zero config: local disk CAS/AC, 127.0.0.1:8980
    reapi-server --config FILE.toml   # see docs/CONFIG.md
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from cas.config import ConfigError, build_stores, close_stores
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.config import ServerConfig, load_config
from server.instances import InstanceRegistry
from server.services.action_cache import ActionCacheService
from server.services.bytestream import ByteStreamService
from server.services.capabilities import CapabilitiesService
from server.services.cas import ContentAddressableStorageService
from server.uploads import UploadRegistry

log = logging.getLogger("reapi.server")

# gRPC message limits: batch requests may carry max_batch_total_size_bytes of data
# plus framing; anything beyond that is refused by gRPC itself.
MESSAGE_OVERHEAD = 1 << 20


@dataclass
class ReapiServer:
    """A started server: its gRPC port and the parts tests may inspect."""

    grpc_server: grpc.aio.Server
    port: int
    config: ServerConfig
    stores: dict[str, BlobStore]
    instances: InstanceRegistry
    uploads: UploadRegistry | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.grpc_server.stop(grace)
        if self.uploads is not None:
            await self.uploads.aclose()  # partial uploads are open store writes
        await close_stores(self.stores)


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    limit = max(16 << 20, config.max_batch_total_size_bytes + MESSAGE_OVERHEAD)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Clients such as Bazel keep connections open for a whole build.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]


async def start_server(config: ServerConfig) -> ReapiServer:
    """Build the stores and services, bind ``config.listen`` (port 0 picks one) and start."""
    stores = await build_stores(config.stores)
    try:
        instances = InstanceRegistry.from_config(config.instances, stores)
        server = grpc.aio.server(options=grpc_options(config))
        re_grpc.add_CapabilitiesServicer_to_server(
            CapabilitiesService(instances, config.max_batch_total_size_bytes), server
        )
        # Storage services: CAS, ByteStream (with resumable uploads), ActionCache.
        uploads = UploadRegistry()
        re_grpc.add_ContentAddressableStorageServicer_to_server(
            ContentAddressableStorageService(instances, config.max_batch_total_size_bytes), server
        )
        bs_grpc.add_ByteStreamServicer_to_server(ByteStreamService(instances, uploads), server)
        re_grpc.add_ActionCacheServicer_to_server(ActionCacheService(instances), server)
        port = server.add_insecure_port(config.listen)
        if port == 0:
            raise ConfigError(f"cannot listen on {config.listen}")
        await server.start()
    except BaseException:
        await close_stores(stores)
        raise
    return ReapiServer(server, port, config, stores, instances, uploads=uploads)


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    server = await start_server(config)
    log.info("reapi-server listening on %s", server.address)
    print(f"reapi-server listening on {server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reapi-server", description="REAPI v2 server")
    parser.add_argument("--config", type=Path, help="TOML config file (default: embedded zero-config setup)")
    parser.add_argument("--listen", help="address to listen on, overriding the config (e.g. 0.0.0.0:8980)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.listen:
            config.listen = args.listen
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"reapi-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
