"""Server configuration: one TOML file, and embedded defaults when there is none.

    [server]
    listen = "127.0.0.1:8980"
    max_batch_total_size_bytes = "4MiB"

    [stores.cas-disk]            # see cas/config.py for store types
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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cas.config import ConfigError, cache_home, parse_size

WILDCARD_INSTANCE = "*"
DEFAULT_LISTEN = "127.0.0.1:8980"
DEFAULT_MAX_BATCH = 4 << 20


@dataclass(frozen=True)
class InstanceConfig:
    """One REAPI instance name and the stores behind it."""

    name: str
    cas: str
    ac: str
    ac_update_enabled: bool = True
    # Check that every blob an action result references exists before a cache hit.
    ac_completeness_check: bool = True


@dataclass
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_batch_total_size_bytes: int = DEFAULT_MAX_BATCH
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: list[InstanceConfig] = field(default_factory=list)
    # The whole parsed file, for sections that other parts of the server read.
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
        stores=default_stores(),
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
    )


def parse_config(data: dict[str, Any]) -> ServerConfig:
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError("[server] must be a table")
    stores = data.get("stores")
    if not isinstance(stores, dict) or not stores:
        raise ConfigError("the config defines no [stores.NAME] tables")
    instances = []
    for i, entry in enumerate(data.get("instances", [])):
        where = f"[[instances]] #{i + 1}"
        if "scheduler" in entry:
            # Refused rather than ignored: a config that names one would silently share
            # the one scheduler all instances use (see [execution] in docs/CONFIG.md).
            raise ConfigError(
                f"{where}: per-instance schedulers are not supported; every instance shares the one "
                "configured by [execution], so remove the 'scheduler' key"
            )
        unknown = set(entry) - {"name", "cas", "ac", "ac_update_enabled", "ac_completeness_check"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("cas", "ac"):
            if entry.get(key) not in stores:
                raise ConfigError(f"{where}: {key} = {entry.get(key)!r} is not defined under [stores]")
        instances.append(
            InstanceConfig(
                name=str(entry.get("name", "")),
                cas=entry["cas"],
                ac=entry["ac"],
                ac_update_enabled=bool(entry.get("ac_update_enabled", True)),
                ac_completeness_check=bool(entry.get("ac_completeness_check", True)),
            )
        )
    if not instances:
        raise ConfigError("the config defines no [[instances]]")
    names = [i.name for i in instances]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"instance names defined twice: {duplicates}")
    max_batch = parse_size(server.get("max_batch_total_size_bytes", DEFAULT_MAX_BATCH), "[server] max_batch_total_size_bytes")
    if max_batch < DEFAULT_MAX_BATCH:
        # Clients size their batches to 4 MiB without asking; a smaller limit refuses them.
        raise ConfigError(f"[server] max_batch_total_size_bytes = {max_batch} is below the 4MiB clients assume")
    return ServerConfig(
        listen=str(server.get("listen", DEFAULT_LISTEN)),
        max_batch_total_size_bytes=max_batch,
        stores=stores,
        instances=instances,
        raw=data,
    )


def load_config(path: Path | None) -> ServerConfig:
    """Parse a TOML file, or return the embedded defaults when ``path`` is None."""
    if path is None:
        return default_config()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
