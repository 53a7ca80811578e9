"""reapi-server: the composition root. Every part of the server is wired here.

    reapi-server                      # zero config: local disk CAS/AC, 127.0.0.1:8980
    reapi-server --config FILE.toml   # see docs/CONFIG.md
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc

from cas.compression.codecs import Codecs, DeflateCodec, ZstdCodec
from cas.compression.forms import CompressedForms
from cas.cli import OneLineParser, add_common_arguments, setup_logging
from cas.config import ConfigError, build_stores, close_stores
from cas.errors import ReapiError
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2_grpc as logstream_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from server import encoded_responses, event_loop
from server.allocator import tune_allocator
from server.assets.assembly import AssetParts, build_assets
from server.assets.config import AssetsConfig
from server.auth.assembly import Security, build_security
from server.auth.owners import RecordOwners
from server.auth.cli import add_security_arguments, with_security_flags
from server.auth.exposure import check_exposure
from cas.collector import tune_for_serving
from server.config import CompressorName, ServerConfig, load_config
from server.execution_parts import ExecutionParts, build_execution
from server.explain.history import ActionHistory
from server.http.assembly import start_http
from server.http.site import HttpSite
from server.listen_errors import StartupError, probe_bind
from server.metrics.cas_traffic import count_instance_stores
from server.metrics.families import ServerMetrics
from server.metrics.rpc_timing import RpcTiming
from server.metrics.store_gauges import watch_stores
from server.method_table import MethodTable
from server.rpc_wrapping import HandlerWrapper, registrar
from server.instances import InstanceRegistry
from server.local_worker import parse_local_worker, start_local_worker
from server.activity_log import start_activity_log
from server.scheduler.clock import Clock
from server.scheduler.owners import StateOwners
from server.scheduler.state.interface import StateFactory
from server.scheduler.validation import ActionPreparer
from server.full_disks import warn_of_full_disks
from server.startup_summary import startup_summary
from server.services.bot_summaries import MAX_SUMMARY_BYTES
from server.services.bots import BotsService
from server.services.execution import ExecutionService, PriorityRange
from server.services.logstream import LogStreamByteStream, LogStreamService
from server.services.operations import OperationsService
from server.services.action_cache import ActionCacheService
from server.services.bytestream import ByteStreamService
from server.write_requests import decode_write_request
from server.services.capabilities import CapabilitiesService
from server.services.cas import ContentAddressableStorageService
from server.services.fetch import FetchService
from server.services.push import PushService
from server.uploads import UploadRegistry

log = logging.getLogger("reapi.server")

# gRPC message limits: batch requests may carry max_batch_total_size_bytes of data
# plus framing; anything beyond that is refused by gRPC itself.
MESSAGE_OVERHEAD = 1 << 20
# Request metadata a call may carry: a bot's cache summary (base64 on the wire) and the rest.
METADATA_LIMIT = 64 << 10


@dataclass
class ReapiServer:
    """A started server: its gRPC port and the parts tests may inspect."""

    grpc_server: grpc.aio.Server
    port: int
    config: ServerConfig
    stores: dict[str, BlobStore]
    instances: InstanceRegistry
    uploads: UploadRegistry | None = None
    execution: ExecutionParts | None = None
    assets: AssetParts | None = None
    forms: CompressedForms = field(default_factory=CompressedForms)  # compressed forms kept for reads
    metrics: ServerMetrics | None = None  # None when the server serves no HTTP
    http: HttpSite | None = None
    security: Security | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        if self.http is not None:
            await self.http.stop()  # open console streams end before what they follow
        if self.execution is not None:
            await self.execution.stop()
        await self.grpc_server.stop(grace)
        if self.uploads is not None:
            await self.uploads.aclose()  # partial uploads are open store writes
        if self.assets is not None:
            await self.assets.aclose()  # downloads still running, the HTTP client
        if self.security is not None:
            self.security.close()
        await close_stores(self.stores)


def add_execution_services(parts: ExecutionParts, instances: InstanceRegistry, server: grpc.aio.Server,
                           metrics: ServerMetrics | None = None) -> None:
    """Execution, Operations, Bots and LogStream on the same port as everything else."""
    matcher = parts.config.matcher()
    preparer = ActionPreparer(matcher, parts.config.max_action_timeout, parts.inputs, sketches=parts.config.locality)
    priorities = PriorityRange(parts.config.min_priority, parts.config.max_priority)
    re_grpc.add_ExecutionServicer_to_server(
        ExecutionService(instances, parts.scheduler, preparer, parts.results, priorities, metrics, parts.history),
        server
    )
    lro_grpc.add_OperationsServicer_to_server(OperationsService(parts.scheduler), server)
    bots = BotsService(instances, parts.scheduler, matcher, parts.inputs, parts.config.inline_blob_limit,
                       MAX_SUMMARY_BYTES if parts.config.locality else 0)
    bots_grpc.add_BotsServicer_to_server(bots, server)
    logstream_grpc.add_LogStreamServiceServicer_to_server(LogStreamService(parts.logstreams), server)


def build_compression(config: ServerConfig) -> tuple[Codecs, CompressedForms]:
    """The compressors served (``[server] compressors``) and the cache of compressed forms."""
    makers = {CompressorName.ZSTD: ZstdCodec, CompressorName.DEFLATE: DeflateCodec}
    codecs = Codecs([makers[name]() for name in config.compressors])
    return codecs, CompressedForms(max_bytes=config.compressed_cache_size)


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    limit = max(16 << 20, config.max_batch_total_size_bytes + MESSAGE_OVERHEAD)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Bots' cache summaries arrive in request metadata (docs/BOTS_PROTOCOL.md section 8).
        ("grpc.max_metadata_size", METADATA_LIMIT),
        ("grpc.absolute_max_metadata_size", METADATA_LIMIT),
        # Clients such as Bazel keep connections open for a whole build.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]


async def start_server(
    config: ServerConfig, clock: Clock | None = None, scheduler_state: StateFactory | None = None,
    local_worker: bool = False,
) -> ReapiServer:
    """Build the stores and services, bind ``config.listen`` (port 0 picks one) and start.

    ``clock`` drives the scheduler's leases and retention (tests pass a fake one);
    ``scheduler_state`` builds the scheduler's state (default: [execution] state; tests
    run against each one); ``local_worker``: this server will start its own worker
    (which gets a way in)."""
    check_exposure(config.listen, config.tls.enabled, config.auth.enabled, config.allow_insecure)
    # Ports first: a taken one is a one-line error before any store is opened.
    if not config.listen.endswith(":0"):
        reason = probe_bind(config.listen)
        if reason is not None:
            raise StartupError(f"cannot listen on {config.listen} for gRPC: {reason}")
    http_socket = HttpSite.bind(config.http_listen) if config.http_listen else None
    try:
        stores = await build_stores(config.stores)
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        raise
    warn_of_full_disks(stores)
    assets: AssetParts | None = None
    http: HttpSite | None = None
    server: grpc.aio.Server | None = None
    security: Security | None = None
    # Metrics exist only where they can be read: on the HTTP port.
    metrics = ServerMetrics() if config.http_listen else None
    try:
        if metrics is not None:
            watch_stores(metrics, stores)
        instance_stores = stores if metrics is None else count_instance_stores(
            stores, (i.cas for i in config.instances), metrics)
        instances = InstanceRegistry.from_config(config.instances, instance_stores)
        execution = build_execution(config, instances, clock, metrics, scheduler_state)
        if execution is not None and metrics is not None:
            execution.history = ActionHistory()
        codecs, forms = build_compression(config)
        # Certificates, token file, JWKS: loaded now, so a mistake stops the server here.
        owners = RecordOwners(StateOwners(execution.scheduler.state)) if execution is not None else None
        security = build_security(config.tls, config.auth, owners, local_worker=local_worker)
        timing: list[HandlerWrapper] = [RpcTiming(metrics.rpc_duration)] if metrics is not None else []
        # Outermost last: the timing sees refused calls too, counted by their code.
        wrappers = security.wrappers() + timing
        server = grpc.aio.server(options=grpc_options(config))
        # Each handler wrapped once, as it is added; all found through one table (server/method_table.py).
        table = MethodTable(registrar(server, wrappers))
        services = cast(grpc.aio.Server, table)  # it stands in for the server while services are added
        re_grpc.add_CapabilitiesServicer_to_server(
            CapabilitiesService(
                instances, config.max_batch_total_size_bytes, execution.capabilities() if execution else None, codecs
            ),
            services,
        )
        # Storage services: CAS, ByteStream (with resumable uploads), ActionCache.
        uploads = UploadRegistry(max_idle_bytes=config.idle_upload_memory)
        # Methods whose usual answers are encoded by hand (server/encoded_responses.py).
        encoded_responses.register(
            re_grpc.add_ContentAddressableStorageServicer_to_server,
            ContentAddressableStorageService(instances, config.max_batch_total_size_bytes, codecs, forms),
            services,
            ("BatchUpdateBlobs", "BatchReadBlobs"),
        )
        logstream_bytestream = LogStreamByteStream(execution.logstreams) if execution else None
        encoded_responses.register(
            bs_grpc.add_ByteStreamServicer_to_server,
            ByteStreamService(instances, uploads, logstream_bytestream, codecs, forms),
            services,
            ("Read",),
            {"Write": decode_write_request},
        )
        encoded_responses.register(
            re_grpc.add_ActionCacheServicer_to_server, ActionCacheService(instances, metrics), services, ("GetActionResult",)
        )
        if execution is not None:
            add_execution_services(execution, instances, services, metrics)
        # Remote Asset API (Fetch, Push): on when [assets] or a store named "assets" exists.
        assets_config = AssetsConfig.parse(config.section("assets"), stores)
        if assets_config is not None:
            assets = build_assets(assets_config, stores[assets_config.index])
            asset_grpc.add_FetchServicer_to_server(FetchService(instances, assets.fetcher), services)
            asset_grpc.add_PushServicer_to_server(PushService(instances, assets.pusher), services)
        table.install()
        port = bind_grpc(server, config.listen, security)
        if assets is not None:
            assets.serving_on(port)  # a fetch may not call the server itself
        await server.start()
        if execution is not None:
            execution.start()
        if metrics is not None and http_socket is not None:
            http = await start_http(http_socket, metrics, instances, execution, security.read_check())
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        if execution is not None:
            await execution.stop()
        if server is not None:
            await server.stop(None)
        if assets is not None:
            await assets.aclose()
        if security is not None:
            security.close()
        await close_stores(stores)
        raise
    return ReapiServer(
        server, port, config, stores, instances, uploads=uploads, execution=execution, assets=assets, forms=forms,
        metrics=metrics, http=http, security=security,
    )


def bind_grpc(server: grpc.aio.Server, address: str, security: Security) -> int:
    """Bind the gRPC port (TLS when configured); a taken or impossible address is a one-line StartupError."""
    try:
        port = security.bind(server, address)
    except RuntimeError:  # grpc's "Failed to bind to address ...", without the reason
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {address} for gRPC: {probe_bind(address) or 'the bind failed'}")
    return port


async def serve(config: ServerConfig, zero_config: bool = False, log_level: str = "INFO") -> None:
    """Run until SIGINT or SIGTERM."""
    local_worker_config = parse_local_worker(config.section("local_worker"), zero_config)
    server = await start_server(config, local_worker=local_worker_config.enabled)
    log.info("reapi-server listening on %s (%s://)", server.address, "grpcs" if config.tls.enabled else "grpc")
    log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])  # uvloop or asyncio
    # The first line is what scripts and tests wait for; the rest says what is served.
    print(f"reapi-server listening on {server.address}", flush=True)
    tune_for_serving()  # after start-up: what it built is frozen, never collected again
    # Zero config also runs a local reapi-worker (a process) against this port:
    # started once the server listens, stopped before the server.
    assert server.security is not None
    local_worker = start_local_worker(local_worker_config, server.execution is not None,
                                      config.listen.rsplit(":", 1)[0], server.port, log_level,
                                      server.security.local_worker)
    for line in startup_summary(server, local_worker_config if local_worker is not None else None):
        print(f"  {line}", flush=True)
    reporter = start_activity_log(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if reporter is not None:
        reporter.cancel()
    if local_worker is not None:
        await local_worker.stop()
    await server.stop(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="reapi-server", description="REAPI v2 server")
    parser.add_argument("--config", type=Path, help="TOML config file (default: embedded zero-config setup)")
    parser.add_argument("--listen", help="address to listen on, overriding the config (e.g. 0.0.0.0:8980)")
    parser.add_argument("--http-listen", metavar="ADDR",
                        help="HTTP address of /metrics and the web console, overriding the config "
                             "(zero config: 127.0.0.1:8981; '' turns HTTP and metrics off)")
    parser.add_argument("--no-local-worker", action="store_true",
                        help="do not start the local reapi-worker the zero-config server runs")
    add_security_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.listen:
            config.listen = args.listen
        if args.http_listen is not None:
            config.http_listen = args.http_listen
        if args.no_local_worker:
            config.raw.setdefault("local_worker", {})["enabled"] = False
        config.tls, config.auth = with_security_flags(config.tls, config.auth, args)
        tune_allocator()  # large messages reuse memory instead of faulting in fresh pages (server/allocator.py)
        event_loop.run(serve(config, zero_config=args.config is None, log_level=args.log_level), config.event_loop)
    except ConfigError as exc:
        print(f"reapi-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except (StartupError, ReapiError) as exc:  # a taken port, a store directory in use
        why = exc.message if isinstance(exc, ReapiError) else str(exc)
        print(f"reapi-server: cannot start: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
