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

    for name in specs:
        visit(name, [])
    return order


class _Reader:
    """Typed access to one store's keys, with errors that name the store and key."""

    def __init__(self, name: str, spec: StoreSpec) -> None:
        self.name, self.spec = name, spec
        self.used = {"type"}

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
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

    def path(self, key: str, default: str) -> Path:
        return expand_path(self.string(key, default))

    def check_unused(self) -> None:
        extra = sorted(set(self.spec) - self.used)
        if extra:
            raise ConfigError(f"store {self.name!r} ({self.spec.get('type')}): unknown keys {extra}")


async def build_store(name: str, spec: StoreSpec, built: Mapping[str, BlobStore]) -> BlobStore:
    """Build one store; its children are already in ``built``."""
    r = _Reader(name, spec)
    kind = r.string("type", "")
    store: BlobStore
    match kind:
        case "memory":
            from cas.memory import MemoryStore

            store = MemoryStore(max_bytes=r.size("max_size", "1GiB"), name=name)
        case "disk":
            from cas.disk import DiskStore

            store = await DiskStore.open(
                r.path("path", str(cache_home() / name)), max_bytes=r.size("max_size", "20GiB"), name=name
            )
        case "redis":
            from cas.redis import RedisStore

            store = RedisStore.from_url(
                r.string("url", "redis://127.0.0.1:6379/0"),
                key_prefix=r.string("key_prefix", f"reapi:{name}:"),
                max_value_size=r.size("max_value_size", "64MiB"),
                name=name,
            )
        case "verify":
            from cas.verify import VerifyingStore

            store = VerifyingStore(built[r.string("inner")], name=name)
        case "size_partition":
            from cas.size_partition import SizePartitioningStore

            store = SizePartitioningStore(
                small=built[r.string("small")],
                large=built[r.string("large")],
                threshold=r.size("threshold", "64KiB"),
                name=name,
            )
        case "read_cache":
            from cas.read_cache import ReadCachingStore

            store = ReadCachingStore(fast=built[r.string("fast")], slow=built[r.string("slow")], name=name)
        case _:
            known = "memory, disk, redis, verify, size_partition, read_cache"
            raise ConfigError(f"store {name!r}: unknown type {kind!r} (known: {known})")
    r.check_unused()
    return store


async def build_stores(specs: Mapping[str, StoreSpec]) -> dict[str, BlobStore]:
    """Build every store in dependency order. On failure, closes what was built."""
    built: dict[str, BlobStore] = {}
    try:
        for name in build_order(specs):
            built[name] = await build_store(name, specs[name], built)
    except BaseException:
        await close_stores(built)
        raise
    return built


async def close_stores(stores: Mapping[str, BlobStore]) -> None:
    """Close every store once, parents before children."""
    for store in reversed(list(stores.values())):
        await store.aclose()
