"""Server configuration: one TOML file, and embedded defaults when there is none.

    [server]
    listen = "127.0.0.1:8980"
    max_batch_total_size_bytes = "4MiB"

    [stores.cas-disk]            # see cas/config/stores.py for store types
    type = "disk"
    path = "~/.cache/reapi/cas"

    [stores.cas]
    type = "verify"
    inner = "cas-disk"

    [stores.ac]
    type = "packed"
    path = "~/.cache/reapi/action-cache"

    [[instances]]
    name = "*"                   # "*" serves every instance name
    cas = "cas"
    ac = "ac"

The reference of every key is docs/CONFIG.md.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cas.config import (
    ConfigError, Size, StoreName, StoreSpec, cache_home, check_sections, errors_in, read_store_specs, read_table,
    read_toml,
)
from server.uploads import DEFAULT_MAX_IDLE_BYTES
from server.assets.config import read_assets_section
from server.auth.config import AuthConfig, TlsConfig
from server.event_loop import EventLoop
from server.local_worker import parse_local_worker
from server.scheduler.config import parse_execution_config

WILDCARD_INSTANCE = "*"
DEFAULT_LISTEN = "127.0.0.1:8980"
# The zero-config server's metrics and console: next to its gRPC port, loopback only.
DEFAULT_HTTP_LISTEN = "127.0.0.1:8981"
DEFAULT_MAX_BATCH = 4 << 20
DEFAULT_COMPRESSED_CACHE = 64 << 20


class CompressorName(enum.Enum):
    """A compressor the server can serve, as resource names spell it."""

    ZSTD = "zstd"
    DEFLATE = "deflate"


ALL_COMPRESSORS = (CompressorName.ZSTD, CompressorName.DEFLATE)


@dataclass(frozen=True)
class ServerSection:
    """``[server]``."""

    listen: str = DEFAULT_LISTEN
    """The address of the one gRPC port every service is on (``--listen`` overrides it)."""
    max_batch_total_size_bytes: Size = DEFAULT_MAX_BATCH
    """The most data one BatchUpdateBlobs / BatchReadBlobs may carry (at least 4MiB)."""
    compressors: tuple[CompressorName, ...] = ALL_COMPRESSORS
    """Compressors served on ByteStream (compressed-blobs) and in batches; [] for none."""
    compressed_cache_size: Size = DEFAULT_COMPRESSED_CACHE
    """Memory for compressed forms of blobs read compressed more than once."""
    http_listen: str = ""
    """The HTTP port of ``/metrics`` and the web console; ``""`` serves no HTTP and collects
    no metrics. ``--http-listen`` overrides it; the zero-config server uses 127.0.0.1:8981."""
    idle_upload_memory: Size = DEFAULT_MAX_IDLE_BYTES
    """Memory broken-off ByteStream uploads may hold while they wait to be resumed
    (estimated); past it the oldest are dropped. Halved when memory is tight."""
    allow_insecure: bool = False
    """Listen on a non-loopback address without TLS and authentication (a trusted network only)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """``[server.tls]``: the port's certificate, and the CA of client certificates."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    """``[server.auth]``: tokens, JWT, client certificate identities, anonymous permissions."""
    event_loop: EventLoop = EventLoop.UVLOOP
    """The event loop the server runs on (server/event_loop.py): "uvloop" or "asyncio"."""

    def __post_init__(self) -> None:
        if self.max_batch_total_size_bytes < DEFAULT_MAX_BATCH:
            # Clients size their batches to 4 MiB without asking; a smaller limit refuses them.
            raise ValueError(
                f"max_batch_total_size_bytes = {self.max_batch_total_size_bytes} is below the 4MiB clients assume"
            )
        if self.auth.certificates and not self.tls.requires_client_certificates:
            raise ValueError("[[server.auth.certificates]] need [server.tls] client_ca (no certificate is asked for)")


@dataclass(frozen=True)
class InstanceConfig:
    """One ``[[instances]]`` entry: a REAPI instance name and the stores behind it."""

    name: str
    """The instance name; ``"*"`` serves every name not listed. Default ``""`` in a file."""
    cas: StoreName
    """The store holding the instance's blobs."""
    ac: StoreName
    """The store holding its action results."""
    ac_update_enabled: bool = True
    """Whether clients may write action results (UpdateActionResult)."""
    ac_completeness_check: bool = True
    """Check that every blob an action result references exists before a cache hit."""


@dataclass
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_batch_total_size_bytes: int = DEFAULT_MAX_BATCH
    compressors: tuple[CompressorName, ...] = ALL_COMPRESSORS
    compressed_cache_size: int = DEFAULT_COMPRESSED_CACHE
    http_listen: str = ""
    idle_upload_memory: int = DEFAULT_MAX_IDLE_BYTES
    event_loop: EventLoop = EventLoop.UVLOOP
    stores: Mapping[str, StoreSpec | Mapping[str, Any]] = field(default_factory=dict)
    instances: list[InstanceConfig] = field(default_factory=list)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    allow_insecure: bool = False
    # The whole parsed file, for the sections other parts of the server read where they
    # are used ([execution], [assets], [local_worker]); parse_config has checked them.
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        return value


def default_stores(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The zero-config stores, all on local disk: a verified CAS whose blobs of up to
    256 KiB (by count nearly all of a build's) are packed into segment files and
    larger ones kept one file each, and a packed action cache. docs/CONFIG.md has the
    measurements behind the threshold."""
    root = root or cache_home()
    return {
        "cas-small": {"type": "packed", "path": str(root / "cas-small"), "max_size": "4GiB"},
        # The directory of the one-file-per-blob CAS of earlier versions, kept for large blobs.
        "cas-large": {"type": "disk", "path": str(root / "cas"), "max_size": "16GiB"},
        "cas-split": {"type": "size_partition", "small": "cas-small", "large": "cas-large", "threshold": "256KiB"},
        "cas": {"type": "verify", "inner": "cas-split"},
        # Results up to the 16 MiB a request may carry (server/app.py grpc_options).
        "ac": {"type": "packed", "path": str(root / "action-cache"), "max_size": "1GiB", "max_value_size": "16MiB"},
        # The Remote Asset index ((uri, qualifiers) -> digest); see docs/ASSETS.md.
        "assets": {"type": "disk", "path": str(root / "assets"), "max_size": "256MiB"},
    }


def default_config() -> ServerConfig:
    """What `reapi-server` runs with no config file: everything local, any instance name."""
    return ServerConfig(
        http_listen=DEFAULT_HTTP_LISTEN,
        stores=default_stores(),
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
    )


def parse_config(data: dict[str, Any]) -> ServerConfig:
    """Every section of the file checked (the worker's [worker] is the worker's to check)."""
    check_sections(data)
    server = read_table(ServerSection, data.get("server", {}), "[server]")
    tables = data.get("stores")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("the config defines no [stores.NAME] tables")
    stores = read_store_specs(tables)
    instances = parse_instances(data.get("instances", []), stores)
    # Read again where they are used (ServerConfig.section); checked now so that a
    # mistake names the file and stops the server before anything is opened or bound.
    parse_execution_config(data.get("execution", {}))
    read_assets_section(data.get("assets", {}))
    parse_local_worker(data.get("local_worker", {}), zero_config=False)
    return ServerConfig(
        listen=server.listen,
        max_batch_total_size_bytes=server.max_batch_total_size_bytes,
        compressors=server.compressors,
        compressed_cache_size=server.compressed_cache_size,
        http_listen=server.http_listen,
        idle_upload_memory=server.idle_upload_memory,
        event_loop=server.event_loop,
        stores=stores,
        instances=instances,
        tls=server.tls,
        auth=server.auth,
        allow_insecure=server.allow_insecure,
        raw=data,
    )


def parse_instances(entries: object, stores: Mapping[str, Any]) -> list[InstanceConfig]:
    if not isinstance(entries, list):
        raise ConfigError(f"[[instances]] must be an array of tables, got {entries!r}")
    instances = []
    for i, entry in enumerate(entries):
        where = f"[[instances]] #{i + 1}"
        if isinstance(entry, Mapping) and "scheduler" in entry:
            # Refused rather than ignored: a config that names one would silently share
            # the one scheduler all instances use (see [execution] in docs/CONFIG.md).
            raise ConfigError(
                f"{where}: per-instance schedulers are not supported; every instance shares the one "
                "configured by [execution], so remove the 'scheduler' key"
            )
        instance = read_table(InstanceConfig, entry, where, defaults={"name": ""})
        for key in ("cas", "ac"):
            if getattr(instance, key) not in stores:
                raise ConfigError(f"{where}: {key} = {getattr(instance, key)!r} is not defined under [stores]")
        instances.append(instance)
    if not instances:
        raise ConfigError("the config defines no [[instances]]")
    names = [i.name for i in instances]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"instance names defined twice: {duplicates}")
    return instances


def load_config(path: Path | None) -> ServerConfig:
    """Parse a TOML file, or return the embedded defaults when ``path`` is None."""
    if path is None:
        return default_config()
    with errors_in(path):
        return parse_config(read_toml(path))
