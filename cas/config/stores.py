"""One typed spec per store type: its keys, their kinds, defaults and meaning.

A ``[stores.NAME]`` table is ``type = "..."`` plus the keys of that type's spec;
``StoreName`` keys name child stores. docs/CONFIG.md ("Stores") explains each key
for operators; ``cas/config/factory.py`` turns a spec into a store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from cas.config.reader import Above, Size, Duration, StoreName, check_known, children_keys, read_table
from cas.config.values import ConfigError
from cas.security.channels import check_link


@dataclass(frozen=True)
class MemorySpec:
    """Values in process memory, least recently used evicted (cas/memory.py)."""

    max_size: Size = 1 << 30
    """Total bytes held before the least recently used values are evicted."""


@dataclass(frozen=True)
class DiskSpec:
    """One file per value in a local directory (cas/disk/)."""

    path: Path | None = None
    """The directory; default ``$XDG_CACHE_HOME/reapi/NAME``."""
    max_size: Size = 20 << 30
    """Total bytes held before the least recently used values are evicted."""
    fsync: bool = False
    """Flush each value (and its directory entry) to the disk before a write returns."""
    mapped_reads: bool = False
    """Stream large values out of memory maps (less CPU); a disk read error then kills the process."""


@dataclass(frozen=True)
class PackedSpec:
    """Small values appended to segment files in a local directory (cas/packed/)."""

    path: Path | None = None
    """The directory of the segment files; default ``$XDG_CACHE_HOME/reapi/NAME``."""
    max_size: Size = 4 << 30
    """Total bytes of segment files before the oldest segment is evicted."""
    max_value_size: Size = 1 << 20
    """The largest value accepted."""
    segment_size: Size = 0
    """Bytes per segment file, the unit of eviction; 0 picks one from ``max_size``."""
    fsync: bool = False
    """Flush each batch to the disk before its writers get an answer."""


@dataclass(frozen=True)
class RedisSpec:
    """One Redis string per value (cas/redis/store.py)."""

    url: str = "redis://127.0.0.1:6379/0"
    """The Redis server: ``redis://``, ``rediss://`` (TLS), ``unix://`` or ``redis+sentinel://``."""
    key_prefix: str | None = None
    """Prefix of every key, so stores can share a database; default ``reapi:NAME:``."""
    max_value_size: Size = 64 << 20
    """The largest value accepted."""
    ttl: Duration = 0.0
    """Lifetime of a value, renewed by every access; 0 keeps values until Redis evicts them."""
    timeout: Annotated[Duration, Above(0)] = 2.0
    """The longest a call waits for Redis (to connect, and for each reply) before UNAVAILABLE."""


@dataclass(frozen=True)
class VerifySpec:
    """Content-addressed checks in front of a store (cas/decorators/verify.py)."""

    inner: StoreName
    """The store that holds the values."""


@dataclass(frozen=True)
class SizePartitionSpec:
    """Small blobs to one store, large to another, by the digest's size (CAS only)."""

    small: StoreName
    """The store for blobs of at most ``threshold`` bytes."""
    large: StoreName
    """The store for larger blobs."""
    threshold: Size = 64 << 10
    """The largest size that goes to ``small``."""

    def __post_init__(self) -> None:
        _distinct(self.small, self.large, "small", "large")


@dataclass(frozen=True)
class ReadCacheSpec:
    """A fast store in front of a slow one that stays the source of truth."""

    fast: StoreName
    """The cache, e.g. a memory store."""
    slow: StoreName
    """The source of truth."""
    write_to_fast: bool = False
    """Also write uploads into ``fast`` (after ``slow`` has them)."""

    def __post_init__(self) -> None:
        _distinct(self.fast, self.slow, "fast", "slow")


@dataclass(frozen=True)
class GrpcSpec:
    """The CAS of another REAPI server (cas/remote/store.py)."""

    address: str
    """``grpc://HOST:PORT`` (plain text) or ``grpcs://HOST:PORT`` (TLS)."""
    instance_name: str = ""
    """The instance name to use on that server."""
    max_batch_size: Size = 4 << 20
    """The largest batch request sent."""
    tls_ca: Path | None = None
    """CA certificates (PEM) that sign that server's certificate; default the system's (grpcs:// only)."""
    tls_cert: Path | None = None
    """A client certificate (PEM), for servers that require one (mTLS)."""
    tls_key: Path | None = None
    """The client certificate's private key (PEM)."""
    token_file: Path | None = None
    """A file holding the bearer token sent on every call; re-read when it changes."""

    def __post_init__(self) -> None:
        check_link(self.address, self.tls_ca, self.tls_cert, self.tls_key)


@dataclass(frozen=True)
class ShardSpec:
    """One shard of a ``sharding`` store: ``{ store = "NAME", weight = 1 }``."""

    store: StoreName
    """The store holding this shard's values; its name is what digests are hashed with."""
    weight: Annotated[float, Above(0)] = 1.0
    """This shard's share relative to the others' (2 takes twice what 1 takes)."""


@dataclass(frozen=True)
class ShardingSpec:
    """Values spread over several stores by weighted rendezvous hashing (cas/decorators/sharding.py)."""

    shards: tuple[ShardSpec, ...]
    """The shards, each a store and a weight; their order does not matter."""

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("shards is empty; a sharding store needs at least one shard")
        names = [shard.store for shard in self.shards]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"shards name {', '.join(map(repr, twice))} more than once")


@dataclass(frozen=True)
class MirroredSpec:
    """Every value on two stores, served while either is up (cas/decorators/mirrored.py)."""

    a: StoreName
    """One side of the pair."""
    b: StoreName
    """The other side."""

    def __post_init__(self) -> None:
        _distinct(self.a, self.b, "a", "b")


StoreSpec = (MemorySpec | DiskSpec | PackedSpec | RedisSpec | VerifySpec | SizePartitionSpec | ReadCacheSpec
             | GrpcSpec | ShardingSpec | MirroredSpec)
# Every type = "..." and its spec, in the order errors list them.
STORE_SPECS: dict[str, type[StoreSpec]] = {
    "memory": MemorySpec,
    "disk": DiskSpec,
    "redis": RedisSpec,
    "verify": VerifySpec,
    "size_partition": SizePartitionSpec,
    "read_cache": ReadCacheSpec,
    "grpc": GrpcSpec,
    "packed": PackedSpec,
    "sharding": ShardingSpec,
    "mirrored": MirroredSpec,
}
STORE_TYPES = tuple(STORE_SPECS)
_SPEC_CLASSES = tuple(STORE_SPECS.values())


def _distinct(a: str, b: str, key_a: str, key_b: str) -> None:
    if a == b:
        raise ValueError(f"{key_a} and {key_b} are both {a!r}; they must differ")


def type_of(spec: StoreSpec) -> str:
    return next(kind for kind, cls in STORE_SPECS.items() if isinstance(spec, cls))


def read_store_spec(name: str, table: object) -> StoreSpec:
    """The spec of ``[stores.NAME]``; ConfigError naming the store and the key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"store {name!r}: expected a table ([stores.{name}]), got {table!r}")
    kind = table.get("type")
    if kind is None:
        raise ConfigError(f"store {name!r}: missing required key 'type' (one of: {', '.join(STORE_TYPES)})")
    if not isinstance(kind, str) or kind not in STORE_SPECS:
        check_known([str(kind)], STORE_TYPES, f"store {name!r}", what="type")
    keys = {key: value for key, value in table.items() if key != "type"}
    return read_table(STORE_SPECS[kind], keys, f"store {name!r}", title=f"store {name!r} ({kind})")


def children_of(spec: StoreSpec) -> list[str]:
    """Names of the stores a composite spec refers to: its StoreName keys, and those of
    the tables in its lists (a sharding store's shards)."""
    return list(_store_names(spec))


def _store_names(table: Any) -> Iterator[str]:
    for key in children_keys(type(table)):
        yield getattr(table, key)
    for field in dataclasses.fields(table):
        value = getattr(table, field.name)
        if isinstance(value, (list, tuple)):
            for item in value:
                if dataclasses.is_dataclass(item):
                    yield from _store_names(item)


def typed_specs(specs: Mapping[str, StoreSpec | Mapping[str, Any]]) -> dict[str, StoreSpec]:
    """Every spec typed: tables are read, specs already read are kept."""
    return {name: spec if isinstance(spec, _SPEC_CLASSES) else read_store_spec(name, spec)
            for name, spec in specs.items()}


def build_order(specs: Mapping[str, StoreSpec | Mapping[str, Any]]) -> list[str]:
    """Store names, children before parents; ConfigError on bad specs, unknown names and cycles."""
    typed = typed_specs(specs)
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ConfigError(f"stores form a cycle: {' -> '.join(path + [name])}")
        if name not in typed:
            raise ConfigError(f"store {path[-1]!r} refers to {name!r}, which is not defined under [stores]")
        state[name] = "visiting"
        for child in children_of(typed[name]):
            visit(child, path + [name])
        state[name] = "done"
        order.append(name)

    for name in typed:
        visit(name, [])
    return order


def read_store_specs(tables: Mapping[str, Any]) -> dict[str, StoreSpec]:
    """The ``[stores]`` tables as specs, checked as a whole (references, cycles) before anything is built."""
    specs = typed_specs(tables)
    build_order(specs)
    return specs
