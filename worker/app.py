"""reapi-worker: the composition root. Every part of the worker is wired here.

    reapi-worker --server grpc://HOST:PORT [--instance NAME] [--concurrency N]
                 [--property KEY=VALUE ...] [--cache-dir DIR] [--work-dir DIR] [--config FILE]
    reapi-worker --server grpcs://HOST:PORT --tls-ca FILE [--tls-cert FILE --tls-key FILE] [--token-file FILE]

The worker talks to the server only over gRPC (Bots, CAS, ByteStream, LogStream
writes); it never imports the server. See docs/WORKER.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from cas.cli import OneLineParser, StartupError, add_common_arguments, setup_logging
from cas.config import ConfigError, expand_path
from cas.security.channels import open_channel as open_grpc_channel
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc
from worker.cache_summary import CacheSummary
from cas.collector import tune_for_serving
from worker.config import WorkerConfig, load_worker_config, target_of
from worker.daemon import BotDaemon, SessionSettings
from worker.directories import DirectoryCache
from worker.disk import remove_tree
from worker.executors.local import ExecutionSettings, LocalExecutor
from worker.executors.logged import LoggedExecutor
from worker.executors.metrics import ExecutionMetrics, MetricsExecutor
from worker.executors.timestamped import TimestampedExecutor
from worker.file_cache import FileCache
from worker.http_endpoint import MetricsEndpoint
from worker.input_root import InputRootBuilder
from worker.input_trees import InputTrees
from worker.logs import LogTail
from worker.metrics import WorkerGauges, WorkerMetrics
from worker.platform import PlatformProperties, detect_host, parse_property_args
from worker.remote_stores import RemoteStores, remote_compression
from worker.sandbox.cgroups import remove_leftover_groups
from worker.sandbox.choose import SandboxUnavailable, open_sandbox
from worker.sandbox.leftovers import kill_recorded_groups
from worker.sandbox.limits import ActionLimits
from worker.sandbox.sandbox import Sandbox

log = logging.getLogger("reapi.worker")

MESSAGE_LIMIT = 64 << 20
# Trailing metadata beyond the inline blobs themselves (the lease's other entries).
METADATA_OVERHEAD = 64 << 10


def channel_options(inline_blob_limit: int = 0) -> list[tuple[str, int]]:
    # Inline lease blobs arrive in trailing metadata: take them (gRPC refuses more than 8-16 KiB by default).
    metadata_limit = max(16 << 10, inline_blob_limit + METADATA_OVERHEAD)
    return [
        ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        ("grpc.max_send_message_length", MESSAGE_LIMIT),
        ("grpc.max_metadata_size", metadata_limit),
        ("grpc.absolute_max_metadata_size", metadata_limit),
        # Reconnect quickly after a server restart (gRPC's default backoff reaches 120 s).
        # Not grpc.min_reconnect_backoff_ms: gRPC also takes it as the time a connection
        # attempt may take, and a server across a network or on a busy machine can take
        # longer than that to finish the handshake (tests/worker/test_slow_connect.py).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def open_channel(config: WorkerConfig) -> grpc.aio.Channel:
    """The one channel to the server: TLS for grpcs:// (with a client certificate if
    configured), and the bearer token on every call if there is a token file."""
    return open_grpc_channel(config.server, channel_options(config.inline_blob_limit), tls_ca=config.tls_ca,
                             tls_cert=config.tls_cert, tls_key=config.tls_key, token_file=config.token_file)


@dataclass
class Worker:
    """A wired worker; ``run`` serves leases until ``stop`` is set."""

    config: WorkerConfig
    channel: grpc.aio.Channel
    daemon: BotDaemon
    local: LocalExecutor
    files: FileCache
    metrics: ExecutionMetrics
    sandbox: Sandbox
    prometheus: WorkerMetrics | None = None  # with --http-listen
    http: MetricsEndpoint | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.daemon.run(stop)
        finally:
            await self.local.drain()
            await self.files.drain()  # fetched inputs still being taken into the cache
            await self.channel.close()
            if self.http is not None:
                await self.http.stop()
            await self.sandbox.aclose()
            self.files.close()
            log.info("worker stopped: %s", self.metrics.summary())


async def open_worker_sandbox(config: WorkerConfig) -> Sandbox:
    """Remove what a previous run left (processes, cgroups, exec roots), then choose the
    sandbox and say which and why (blocking work on a thread)."""
    await asyncio.to_thread(kill_recorded_groups, config.work_dir)
    if config.cgroups:
        await asyncio.to_thread(remove_leftover_groups, config.work_dir)
    await asyncio.to_thread(_prepare_work_dir, config.work_dir)
    limits = ActionLimits(memory=config.memory_limit, processes=config.max_processes,
                          stdio=config.max_stdio_size, outputs=config.max_output_size)
    try:
        sandbox = await asyncio.to_thread(
            open_sandbox, config.sandbox, config.run_as, config.network, limits, config.bwrap, config.cgroups,
            config.work_dir, config.concurrency, config.input_mounts)
    except SandboxUnavailable as exc:
        raise ConfigError(str(exc)) from None
    # The action user passes through (never lists) the work directory to its exec root.
    os.chmod(config.work_dir, 0o700 if sandbox.placement.owner is None else 0o711)
    log.info("sandbox: %s", sandbox.describe())
    for note in sandbox.weaker():
        log.warning("sandbox: %s", note)
    return sandbox


async def build_worker(config: WorkerConfig, properties: PlatformProperties) -> Worker:
    """Open the cache, prepare the work directory and sandbox, and wire the executor chain."""
    bot_id = config.bot_id or f"{socket.gethostname()}.{os.getpid()}"
    sandbox = await open_worker_sandbox(config)
    sandbox.start()  # sandboxes made ready for the first actions
    if "network" not in properties.values:
        properties = properties.with_overrides({"network": config.network.offered()})
    files = await FileCache.open(config.cache_dir, config.cache_max_size)
    trees = None
    if sandbox.placement.mounts:
        trees = await asyncio.to_thread(InputTrees.open, config.work_dir / ".trees", config.input_tree_entries)
    if not _same_filesystem(config.cache_dir, config.work_dir):
        log.warning("cache_dir and work_dir are on different filesystems: inputs will be copied, not hardlinked")
    channel = open_channel(config)
    bytestream = bs_grpc.ByteStreamStub(channel)
    metrics = ExecutionMetrics()
    prometheus = WorkerMetrics() if config.http_listen else None

    def live_log(write_name: str, path: Path) -> LogTail:
        return LogTail(bytestream, write_name, path, config.live_log_interval)

    local = LocalExecutor(
        stores=RemoteStores(channel, compression=remote_compression(config)),
        inputs=InputRootBuilder(files, DirectoryCache(), trees=trees, min_mounted_entries=config.input_mount_min_entries),
        work_dir=config.work_dir,
        settings=ExecutionSettings(
            default_path=config.default_path,
            default_timeout=config.default_timeout,
            max_timeout=config.max_timeout,
            kill_grace=config.kill_grace,
        ),
        live_logs=live_log,
        sandbox=sandbox,
    )
    # The chain, innermost first: local -> timestamped -> metrics -> logged.
    executor = LoggedExecutor(MetricsExecutor(TimestampedExecutor(local, bot_id), metrics,
                                              observe=prometheus.observe if prometheus else None))
    daemon = BotDaemon(
        bots_pb2_grpc.BotsStub(channel),
        executor,
        properties,
        SessionSettings(
            instance_name=config.instance_name,
            bot_id=bot_id,
            capacity=config.concurrency,
            call_timeout=config.call_timeout,
            drain_timeout=config.drain_timeout,
            inline_blob_limit=config.inline_blob_limit,
            inline_file_limit=config.inline_file_limit,
            busy_call_delay=config.busy_call_delay,
            cache_summary_size=config.cache_summary_size,
        ),
        summary=CacheSummary(files, config.cache_summary_size) if config.cache_summary_size else None,
    )
    http = None
    if prometheus is not None:
        prometheus.watch(WorkerGauges(
            slots=lambda: config.concurrency, busy_slots=lambda: metrics.running,
            cache_bytes=lambda: files.total_bytes, fetched_bytes=lambda: files.fetched_bytes,
            subtrees_built=lambda: trees.made if trees is not None else 0,
            subtrees_mounted=lambda: trees.mounted if trees is not None else 0,
        ))
        try:
            http = await MetricsEndpoint.start(prometheus.registry, config.http_listen)
        except BaseException:
            await channel.close()
            raise
    return Worker(config, channel, daemon, local, files, metrics, sandbox, prometheus, http)


def _prepare_work_dir(work_dir: Path) -> None:
    """An empty work directory: exec roots a crashed run left behind are removed."""
    remove_tree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="reapi-worker", description="REAPI worker: runs actions leased over the Bots API")
    parser.add_argument("--server", help="the server, grpc://HOST:PORT (default grpc://127.0.0.1:8980)")
    parser.add_argument("--instance", help="instance name to serve (default \"\")")
    parser.add_argument("--concurrency", type=int, help="actions run at once (default: CPU count)")
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help="add or replace a platform property (repeat; ISA=arm-a64 replaces the detected ISA)")
    parser.add_argument("--cache-dir", help="local CAS cache directory")
    parser.add_argument("--cache-max-size", help="local CAS cache size cap, e.g. 10GiB")
    parser.add_argument("--work-dir", help="where exec roots are made (same filesystem as the cache)")
    parser.add_argument("--bot-id", help="unique, stable id of this worker (default HOST.PID)")
    parser.add_argument("--config", type=Path, help="TOML file with a [worker] table")
    parser.add_argument("--tls-ca", help="CA certificates (PEM) that sign the server's certificate (grpcs://)")
    parser.add_argument("--tls-cert", help="client certificate (PEM) for servers that require one (mTLS)")
    parser.add_argument("--tls-key", help="the client certificate's private key (PEM)")
    parser.add_argument("--token-file", help="file holding the bearer token (sent as authorization: Bearer)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits (reapi-server's local worker)")
    parser.add_argument("--http-listen", metavar="ADDR",
                        help="HTTP address of this worker's /metrics, e.g. 0.0.0.0:8982 (default: none)")
    add_common_arguments(parser, default_level=os.environ.get("REAPI_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    from cas.config import parse_size

    config = load_worker_config(args.config)
    changes: dict[str, object] = {}
    if args.server:
        target_of(args.server)
        changes["server"] = args.server
    if args.instance is not None:
        changes["instance_name"] = args.instance
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigError(f"--concurrency {args.concurrency}: must be at least 1")
        changes["concurrency"] = args.concurrency
    if args.cache_dir:
        changes["cache_dir"] = expand_path(args.cache_dir, "--cache-dir")
    if args.cache_max_size:
        changes["cache_max_size"] = parse_size(args.cache_max_size, "--cache-max-size")
    if args.work_dir:
        changes["work_dir"] = expand_path(args.work_dir, "--work-dir")
    if args.bot_id:
        changes["bot_id"] = args.bot_id
    if args.http_listen is not None:
        changes["http_listen"] = args.http_listen
    for key in ("tls_ca", "tls_cert", "tls_key", "token_file"):
        value = getattr(args, key)
        if value:
            changes[key] = expand_path(value, "--" + key.replace("_", "-"))
    if args.property:
        try:
            extra = parse_property_args(args.property)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        changes["properties"] = {**config.properties, **extra}
    try:
        return replace(config, **changes)  # type: ignore[arg-type]
    except ValueError as exc:  # a combination the config refuses (e.g. --tls-ca with grpc://)
        raise ConfigError(str(exc)) from None


async def watch_parent(stop: asyncio.Event, interval: float = 1.0) -> None:
    """Set ``stop`` once this process is orphaned (its parent's pid changes)."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the parent process %d is gone; stopping", parent)
            stop.set()
            return
        await asyncio.sleep(interval)


async def serve(config: WorkerConfig, exit_with_parent: bool = False) -> None:
    properties = detect_host().with_overrides(config.properties)
    worker = await build_worker(config, properties)
    worker.sandbox.adopt_orphans()  # this process runs nothing but actions
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch_parent(stop)) if exit_with_parent else None
    offered = " ".join(f"{p.key}={p.value}" for p in worker.daemon.worker.properties)
    print(f"reapi-worker {worker.daemon.settings.bot_id} serving {config.server} "
          f"(concurrency {config.concurrency}; {offered})", flush=True)
    if worker.http is not None:
        host = config.http_listen.rpartition(":")[0].strip("[]")
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        print(f"  metrics: http://{host}:{worker.http.port}/metrics", flush=True)
    tune_for_serving()  # after start-up: what it built is frozen, never collected again
    try:
        await worker.run(stop)
    finally:
        if watcher is not None:
            watcher.cancel()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = config_from_args(args)
        asyncio.run(serve(config, args.exit_with_parent))
    except ConfigError as exc:
        print(f"reapi-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"reapi-worker: cannot start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
