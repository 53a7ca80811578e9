"""Store configuration: a flat table of named stores, built by one factory.

Composite stores name their children (NativeLink's model), so two parents can share
a child and cycles are easy to report::

    [stores.disk]
    type = "disk"
    path = "~/.cache/reapi/cas"
    max_size = "20GiB"

    [stores.cas]
    type = "verify"
    inner = "disk"

``build_stores`` builds every store once, children first, and fails with a
``ConfigError`` that names the store and the key at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cas.store import BlobStore

StoreSpec = Mapping[str, Any]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The keys each store type accepts besides "type"; docs/CONFIG.md ("Stores") explains them.
STORE_KEYS: dict[str, frozenset[str]] = {
    "memory": frozenset({"max_size"}),
    "disk": frozenset({"path", "max_size", "fsync"}),
    "redis": frozenset({"url", "key_prefix", "max_value_size", "ttl"}),
    "verify": frozenset({"inner"}),
    "size_partition": frozenset({"small", "large", "threshold"}),
    "read_cache": frozenset({"fast", "slow", "write_to_fast"}),
    "grpc": frozenset({"address", "instance_name", "max_batch_size"}),
    "packed": frozenset({"path", "max_size", "max_value_size", "segment_size", "fsync"}),
}
STORE_TYPES = tuple(STORE_KEYS)


class ConfigError(ValueError):
    """A configuration mistake, with the place it was found."""


def parse_size(value: int | str, where: str = "size") -> int:
    """Bytes from an int or a string like "512MiB", "20GiB", "4MB"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: size {value} is negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"{where}: {value!r} is not a size (examples: 1048576, \"512MiB\", \"20GiB\")")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def parse_duration(value: int | float | str, where: str = "duration") -> float:
    """Seconds from a number of seconds or a string like "90s", "30m", "3h", "7d"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{where}: duration {value} is negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"{where}: {value!r} is not a duration (examples: 3600, \"90s\", \"30m\", \"3h\", \"7d\")")
    number, unit = match.groups()
    return float(number) * _SECONDS[(unit or "").lower()]


def cache_home() -> Path:
    """The per-user cache directory ($XDG_CACHE_HOME or ~/.cache) for reapi."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reapi"


def expand_path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def children_of(spec: StoreSpec) -> list[str]:
    """Names of the stores a composite spec refers to."""
    keys = {"verify": ["inner"], "size_partition": ["small", "large"], "read_cache": ["fast", "slow"]}
    return [spec[k] for k in keys.get(spec.get("type", ""), []) if k in spec]


def check_spec(name: str, spec: Any) -> None:
    """Reject a spec's shape, type and keys before anything is built (or a disk touched)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"store {name!r}: expected a table ([stores.{name}]), got {spec!r}")
    kind = spec.get("type")
    if kind is None:
        raise ConfigError(f"store {name!r}: missing required key 'type' (one of: {', '.join(STORE_TYPES)})")
    if not isinstance(kind, str) or kind not in STORE_KEYS:
        raise ConfigError(f"store {name!r}: unknown type {kind!r} (known: {', '.join(STORE_TYPES)})")
    unknown = sorted(set(spec) - STORE_KEYS[kind] - {"type"})
    if unknown:
        allowed = ", ".join(sorted(STORE_KEYS[kind]))
        raise ConfigError(f"store {name!r} ({kind}): unknown keys {unknown} (allowed: {allowed})")


def build_order(specs: Mapping[str, StoreSpec]) -> list[str]:
    """Store names, children before parents; ConfigError on unknown names and cycles."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ConfigError(f"stores form a cycle: {' -> '.join(path + [name])}")
        if name not in specs:
            raise ConfigError(f"store {path[-1]!r} refers to {name!r}, which is not defined under [stores]")
        state[name] = "visiting"
        for child in children_of(specs[name]):
            if not isinstance(child, str):
                raise ConfigError(f"store {name!r}: child store names must be strings, got {child!r}")
            visit(child, path + [name])
        state[name] = "done"
        order.append(name)

    for name, spec in specs.items():
        check_spec(name, spec)
    for name in specs:
        visit(name, [])
    return order


class _Reader:
    """Typed access to one store's keys, with errors that name the store and key."""

    def __init__(self, name: str, spec: StoreSpec) -> None:
        self.name, self.spec = name, spec

    def raw(self, key: str, default: Any = ...) -> Any:
        if key in self.spec:
            return self.spec[key]
        if default is ...:
            raise ConfigError(f"store {self.name!r} ({self.spec.get('type')}): missing required key {key!r}")
        return default

    def size(self, key: str, default: Any = ...) -> int:
        return parse_size(self.raw(key, default), f"store {self.name!r} key {key!r}")

    def string(self, key: str, default: Any = ...) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"store {self.name!r} key {key!r}: expected a string, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"store {self.name!r} key {key!r}: expected true or false, got {value!r}")
        return value

    def duration(self, key: str, default: Any = ...) -> float:
        return parse_duration(self.raw(key, default), f"store {self.name!r} key {key!r}")

    def child(self, key: str, built: Mapping[str, BlobStore]) -> BlobStore:
        """A child store by name; build_order has checked that it exists."""
        return built[self.string(key)]

    def distinct_children(self, a: str, b: str, built: Mapping[str, BlobStore]) -> tuple[BlobStore, BlobStore]:
        if self.string(a) == self.string(b):
            raise ConfigError(f"store {self.name!r}: {a} and {b} are both {self.string(a)!r}; they must differ")
        return self.child(a, built), self.child(b, built)

    def path(self, key: str, default: str) -> Path:
        return expand_path(self.string(key, default))


async def build_store(name: str, spec: StoreSpec, built: Mapping[str, BlobStore]) -> BlobStore:
    """Build one store; its children are already in ``built``."""
    check_spec(name, spec)
    r = _Reader(name, spec)
    kind = r.string("type", "")
    store: BlobStore
    match kind:
        case "memory":
            from cas.memory import MemoryStore

            store = MemoryStore(max_bytes=r.size("max_size", "1GiB"), name=name)
        case "disk":
            from cas.disk.store import DiskStore

            store = await DiskStore.open(
                r.path("path", str(cache_home() / name)),
                max_bytes=r.size("max_size", "20GiB"),
                name=name,
                fsync=r.boolean("fsync", False),
            )
        case "packed":
            from cas.packed.store import PackedStore

            store = await PackedStore.open(
                r.path("path", str(cache_home() / name)),
                max_bytes=r.size("max_size", "4GiB"),
                name=name,
                max_value_size=r.size("max_value_size", "1MiB"),
                segment_size=r.size("segment_size", 0) or None,
                fsync=r.boolean("fsync", False),
            )
        case "redis":
            from cas.redis import RedisStore

            store = RedisStore.from_url(
                r.string("url", "redis://127.0.0.1:6379/0"),
                key_prefix=r.string("key_prefix", f"reapi:{name}:"),
                max_value_size=r.size("max_value_size", "64MiB"),
                ttl_seconds=r.duration("ttl", 0) or None,
                name=name,
            )
        case "verify":
            from cas.decorators.verify import VerifyingStore

            store = VerifyingStore(r.child("inner", built), name=name)
        case "size_partition":
            from cas.decorators.size_partition import SizePartitioningStore

            small, large = r.distinct_children("small", "large", built)
            store = SizePartitioningStore(small=small, large=large, threshold=r.size("threshold", "64KiB"), name=name)
        case "read_cache":
            from cas.decorators.read_cache import ReadCachingStore

            fast, slow = r.distinct_children("fast", "slow", built)
            store = ReadCachingStore(fast=fast, slow=slow, name=name, write_to_fast=r.boolean("write_to_fast", False))
        case "grpc":
            from cas.remote import RemoteStore

            store = RemoteStore.connect(
                r.string("address"),
                r.string("instance_name", ""),
                max_batch_bytes=r.size("max_batch_size", "4MiB"),
                name=name,
            )
        case _:
            raise ConfigError(f"store {name!r}: unknown type {kind!r} (known: {', '.join(STORE_TYPES)})")
    return store


async def build_stores(specs: Mapping[str, StoreSpec]) -> dict[str, BlobStore]:
    """Build every store in dependency order. On failure, closes what was built."""
    built: dict[str, BlobStore] = {}
    try:
        for name in build_order(specs):
            try:
                built[name] = await build_store(name, specs[name], built)
            except ConfigError:
                raise
            except ValueError as exc:  # a constructor refusing a value the spec gave it
                raise ConfigError(f"store {name!r}: {exc}") from exc
    except BaseException:
        await close_stores(built)
        raise
    return built


async def close_stores(stores: Mapping[str, BlobStore]) -> None:
    """Close every store once, parents before children."""
    for store in reversed(list(stores.values())):
        await store.aclose()
