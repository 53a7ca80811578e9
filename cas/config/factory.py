"""The one factory: store specs -> stores, children first, each store built once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from cas.config.stores import (
    DiskSpec, GrpcSpec, MemorySpec, MirroredSpec, PackedSpec, ReadCacheSpec, RedisSpec, ShardingSpec,
    SizePartitionSpec, StoreSpec, VerifySpec, build_order, typed_specs,
)
from cas.config.values import ConfigError, cache_home
from cas.store import BlobStore


async def build_store(name: str, spec: StoreSpec, built: Mapping[str, BlobStore]) -> BlobStore:
    """Build one store; its children are already in ``built``."""
    match spec:
        case MemorySpec():
            from cas.memory import MemoryStore

            return MemoryStore(max_bytes=spec.max_size, name=name)
        case DiskSpec():
            from cas.disk.store import DiskStore

            return await DiskStore.open(
                spec.path or cache_home() / name, max_bytes=spec.max_size, name=name, fsync=spec.fsync,
                mapped_reads=spec.mapped_reads,
            )
        case PackedSpec():
            from cas.packed.store import PackedStore

            return await PackedStore.open(
                spec.path or cache_home() / name,
                max_bytes=spec.max_size,
                name=name,
                max_value_size=spec.max_value_size,
                segment_size=spec.segment_size or None,
                fsync=spec.fsync,
            )
        case RedisSpec():
            from cas.redis.store import RedisStore

            return RedisStore.from_url(
                spec.url,
                key_prefix=f"reapi:{name}:" if spec.key_prefix is None else spec.key_prefix,
                max_value_size=spec.max_value_size,
                ttl_seconds=spec.ttl or None,
                timeout=spec.timeout,
                name=name,
            )
        case VerifySpec():
            from cas.decorators.verify import VerifyingStore

            return VerifyingStore(built[spec.inner], name=name)
        case SizePartitionSpec():
            from cas.decorators.size_partition import SizePartitioningStore

            return SizePartitioningStore(
                small=built[spec.small], large=built[spec.large], threshold=spec.threshold, name=name
            )
        case ReadCacheSpec():
            from cas.decorators.read_cache import ReadCachingStore

            return ReadCachingStore(
                fast=built[spec.fast], slow=built[spec.slow], name=name, write_to_fast=spec.write_to_fast
            )
        case GrpcSpec():
            from cas.remote.store import RemoteStore

            try:
                return RemoteStore.connect(
                    spec.address, spec.instance_name, max_batch_bytes=spec.max_batch_size, name=name,
                    tls_ca=spec.tls_ca, tls_cert=spec.tls_cert, tls_key=spec.tls_key, token_file=spec.token_file,
                )
            except ConfigError as exc:  # a TLS or token file that cannot be used
                raise ConfigError(f"store {name!r}: {exc}") from None
        case ShardingSpec():
            from cas.decorators.sharding import Shard, ShardingStore

            return ShardingStore([Shard(built[shard.store], shard.weight) for shard in spec.shards], name=name)
        case MirroredSpec():
            from cas.decorators.mirrored import MirroredStore

            return MirroredStore(built[spec.a], built[spec.b], name=name)
        case _:
            assert_never(spec)


async def build_stores(specs: Mapping[str, StoreSpec | Mapping[str, Any]]) -> dict[str, BlobStore]:
    """Build every store in dependency order (tables are read first; nothing is
    built if any spec is wrong). On failure, closes what was built."""
    typed = typed_specs(specs)
    built: dict[str, BlobStore] = {}
    try:
        for name in build_order(typed):
            try:
                built[name] = await build_store(name, typed[name], built)
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
