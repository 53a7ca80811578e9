"""Worker configuration: a ``[worker]`` table in a TOML file, then command-line overrides.

    [worker]
    server = "grpc://127.0.0.1:8980"
    instance_name = ""
    concurrency = 8                      # default: CPU count
    cache_dir = "~/.cache/reapi/worker/cache"
    cache_max_size = "10GiB"
    work_dir = "~/.cache/reapi/worker/work"   # keep on the cache's filesystem (hardlinks)
    default_path = "/usr/local/bin:/usr/bin:/bin"

    [worker.properties]                  # add to or replace detected platform properties
    ISA = ["arm-a64"]
    pool = "big"

Every key is documented in docs/CONFIG.md (section "Worker").
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cas.config import ConfigError, cache_home, expand_path, parse_size
from worker.platform import host_cpu_count

DEFAULT_SERVER = "grpc://127.0.0.1:8980"


@dataclass(frozen=True)
class WorkerConfig:
    server: str = DEFAULT_SERVER
    instance_name: str = ""
    concurrency: int = field(default_factory=host_cpu_count)
    cache_dir: Path = field(default_factory=lambda: cache_home() / "worker" / "cache")
    cache_max_size: int = 10 << 30
    work_dir: Path = field(default_factory=lambda: cache_home() / "worker" / "work")
    properties: dict[str, list[str]] = field(default_factory=dict)
    default_path: str = "/usr/local/bin:/usr/bin:/bin"
    default_timeout: float | None = None
    max_timeout: float | None = None
    kill_grace: float = 2.0
    live_log_interval: float = 0.1
    drain_timeout: float = 60.0
    bot_id: str = ""  # default: HOST.PID
    call_timeout: float = 60.0
    # Bytes of blobs a lease answer and a completion report may carry inline (docs/BOTS_PROTOCOL.md
    # section 7), if the server agrees; 0 = never (every input is read, every output uploaded).
    inline_blob_limit: int = 1 << 20
    # With every slot busy: seconds before a call is held open only to hear of cancellations.
    busy_call_delay: float = 0.5


_KEYS = {
    "server", "instance_name", "concurrency", "cache_dir", "cache_max_size", "work_dir", "properties",
    "default_path", "default_timeout", "max_timeout", "kill_grace", "live_log_interval", "drain_timeout",
    "bot_id", "call_timeout", "inline_blob_limit", "busy_call_delay",
}


def target_of(server: str) -> tuple[str, bool]:
    """``grpc://HOST:PORT`` (or ``grpcs://``, or plain ``HOST:PORT``) -> (gRPC target, use TLS)."""
    for scheme, secure in (("grpc://", False), ("grpcs://", True), ("http://", False), ("https://", True)):
        if server.startswith(scheme):
            target = server[len(scheme):].rstrip("/")
            break
    else:
        if "://" in server:
            raise ConfigError(f"server {server!r}: use grpc://HOST:PORT or grpcs://HOST:PORT")
        target, secure = server, False
    if not target:
        raise ConfigError(f"server {server!r} names no host")
    return target, secure


def _number(table: dict[str, Any], key: str, positive: bool = True) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (positive and value <= 0):
        raise ConfigError(f"[worker] {key}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _properties(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ConfigError("[worker.properties] must be a table of KEY = \"value\" or KEY = [\"v1\", \"v2\"]")
    out = {}
    for key, values in value.items():
        listed = values if isinstance(values, list) else [values]
        if not all(isinstance(v, str) for v in listed):
            raise ConfigError(f"[worker.properties] {key}: values must be strings, got {values!r}")
        out[key] = list(listed)
    return out


def parse_worker_table(table: dict[str, Any]) -> WorkerConfig:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"[worker]: unknown keys {unknown}")
    config = WorkerConfig()
    changes: dict[str, Any] = {}
    for key in ("server", "instance_name", "default_path", "bot_id"):
        if key in table:
            if not isinstance(table[key], str):
                raise ConfigError(f"[worker] {key}: expected a string, got {table[key]!r}")
            changes[key] = table[key]
    if "server" in changes:
        target_of(changes["server"])
    if "concurrency" in table:
        value = table["concurrency"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"[worker] concurrency: expected a whole number >= 1, got {value!r}")
        changes["concurrency"] = value
    for key in ("cache_dir", "work_dir"):
        if key in table:
            changes[key] = expand_path(str(table[key]))
    for key in ("cache_max_size", "inline_blob_limit"):
        if key in table:
            changes[key] = parse_size(table[key], f"[worker] {key}")
    for key in ("default_timeout", "max_timeout", "kill_grace", "live_log_interval", "drain_timeout", "call_timeout"):
        if key in table:
            changes[key] = _number(table, key)
    if "busy_call_delay" in table:
        delay = _number(table, "busy_call_delay", positive=False)
        if delay is None or delay < 0:
            raise ConfigError(f"[worker] busy_call_delay: expected seconds >= 0, got {table['busy_call_delay']!r}")
        changes["busy_call_delay"] = delay
    if "properties" in table:
        changes["properties"] = _properties(table["properties"])
    return replace(config, **changes)


def load_worker_config(path: Path | None) -> WorkerConfig:
    """The ``[worker]`` table of a TOML file (other tables are ignored), or the defaults."""
    if path is None:
        return WorkerConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    table = data.get("worker", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [worker] must be a table")
    try:
        return parse_worker_table(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
