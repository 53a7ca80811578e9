"""Store specs and the factory: sizes, durations, ${VAR}, errors that name the culprit, and a TOML file built for real."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from cas.config import (
    STORE_TYPES, ConfigError, build_order, build_stores, close_stores, expand_env, parse_duration, parse_size,
    read_store_spec,
)
from cas.config.stores import DiskSpec, MemorySpec, PackedSpec, RedisSpec, ShardingSpec, ShardSpec, SizePartitionSpec
from cas.decorators.mirrored import MirroredStore
from cas.decorators.sharding import ShardingStore
from cas.digest import Digest
from cas.memory import MemoryStore
from cas.decorators.read_cache import ReadCachingStore
from cas.redis.store import RedisStore
from cas.decorators.size_partition import SizePartitioningStore
from cas.decorators.verify import VerifyingStore
from tests.cas.streams import blob, chunks_of, read_all


@pytest.mark.parametrize(
    ("text", "expected"),
    [(0, 0), (4096, 4096), ("4096", 4096), ("512MiB", 512 << 20), ("20GiB", 20 << 30), ("4MB", 4_000_000),
     ("1.5KiB", 1536), ("64 kib", 64 << 10), ("7B", 7)],
)
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", -1, "5 parsecs", True, "1.2.3MiB"])
def test_parse_size_rejects_with_an_example(bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_size"):
        parse_size(bad, "max_size")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(3600, 3600.0), (1.5, 1.5), ("90s", 90.0), ("30m", 1800.0), ("3h", 10800.0), ("7d", 604800.0), ("250ms", 0.25)],
)
def test_parse_duration(text: int | float | str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon", "-3h", -1, "3 fortnights", False])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        parse_duration(bad, "ttl")


# -- factory errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"a": {"type": "tape"}}, r"store 'a': unknown type 'tape' \(known: memory, disk, redis"),
        ({"a": {"max_size": "1GiB"}}, r"store 'a': missing required key 'type'"),
        ({"a": "memory"}, r"store 'a': expected a table"),
        ({"a": {"type": "verify", "inner": "b"}}, r"store 'a' refers to 'b', which is not defined under \[stores\]"),
        (
            {"a": {"type": "verify", "inner": "b"}, "b": {"type": "verify", "inner": "a"}},
            r"stores form a cycle: a -> b -> a",
        ),
        ({"a": {"type": "verify", "inner": "a"}}, r"stores form a cycle: a -> a"),
        (
            {"m": {"type": "memory", "max_sise": "1GiB"}},
            r"store 'm' \(memory\): unknown key 'max_sise' \(did you mean 'max_size'\? known: max_size\)",
        ),
        ({"m": {"type": "memory", "max_size": "a lot"}}, r"store 'm' key 'max_size': 'a lot' is not a size"),
        ({"v": {"type": "verify"}}, r"store 'v' \(verify\): missing required key 'inner'"),
        ({"v": {"type": "verify", "inner": 3}}, r"store 'v' key 'inner': expected the name of a store, got 3"),
        (
            {"m": {"type": "memory"}, "rc": {"type": "read_cache", "fast": "m", "slow": "m"}},
            r"store 'rc': fast and slow are both 'm'; they must differ",
        ),
        (
            {"m": {"type": "memory"}, "n": {"type": "memory"},
             "rc": {"type": "read_cache", "fast": "m", "slow": "n", "write_to_fast": "yes"}},
            r"store 'rc' key 'write_to_fast': expected true or false, got 'yes'",
        ),
        (
            {"m": {"type": "memory"}, "n": {"type": "memory"},
             "sp": {"type": "size_partition", "small": "m", "large": "n", "threshold": "big"}},
            r"store 'sp' key 'threshold': 'big' is not a size",
        ),
        ({"r": {"type": "redis", "ttl": "forever"}}, r"store 'r' key 'ttl': 'forever' is not a duration"),
        ({"r": {"type": "redis", "key_prefix": "a\nb"}}, r"store 'r': redis key_prefix 'a\\nb' must not contain a newline"),
        ({"s": {"type": "sharding", "shards": []}}, r"store 's': shards is empty"),
        ({"s": {"type": "sharding", "shards": [{"store": "m"}]}},
         r"store 's' refers to 'm', which is not defined under \[stores\]"),
        (
            {"m": {"type": "memory"}, "s": {"type": "sharding", "shards": [{"store": "m"}, {"store": "m"}]}},
            r"store 's': shards name 'm' more than once",
        ),
        (
            {"m": {"type": "memory"}, "s": {"type": "sharding", "shards": [{"store": "m", "weight": 0}]}},
            r"store 's' key 'shards' key 'weight': must be positive, got 0",
        ),
        (
            {"m": {"type": "memory"}, "s": {"type": "sharding", "shards": [{"stor": "m"}]}},
            r"unknown key 'stor' \(did you mean 'store'\?",
        ),
        ({"s": {"type": "sharding", "shards": [{"store": "s"}]}}, r"stores form a cycle: s -> s"),
        (
            {"m": {"type": "memory"}, "p": {"type": "mirrored", "a": "m", "b": "m"}},
            r"store 'p': a and b are both 'm'; they must differ",
        ),
        ({"m": {"type": "memory"}, "p": {"type": "mirrored", "a": "m"}}, r"store 'p' \(mirrored\): missing required key 'b'"),
    ],
)
async def test_factory_errors_name_the_store_and_the_problem(specs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await build_stores(specs)


def test_children_come_before_parents_and_shared_children_once() -> None:
    specs = {
        "cas": {"type": "verify", "inner": "tiered"},
        "tiered": {"type": "read_cache", "fast": "hot", "slow": "cold"},
        "ac": {"type": "read_cache", "fast": "hot2", "slow": "cold"},
        "hot": {"type": "memory"},
        "hot2": {"type": "memory"},
        "cold": {"type": "memory"},
    }
    order = build_order(specs)
    assert sorted(order) == sorted(specs)
    for parent, children in [("cas", ["tiered"]), ("tiered", ["hot", "cold"]), ("ac", ["hot2", "cold"])]:
        for child in children:
            assert order.index(child) < order.index(parent)


# -- a whole TOML file ----------------------------------------------------------------


CONFIG = """
[stores.redis-small]
type = "redis"
url = "{redis_url}"
key_prefix = "{prefix}"
max_value_size = "1MiB"
ttl = "3h"

[stores.disk-large]
type = "disk"
path = "{disk}"
max_size = "1GiB"

[stores.tiered]
type = "size_partition"
small = "redis-small"
large = "disk-large"
threshold = "64KiB"

[stores.hot]
type = "memory"
max_size = "64MiB"

[stores.cached]
type = "read_cache"
fast = "hot"
slow = "tiered"
write_to_fast = true

[stores.cas]
type = "verify"
inner = "cached"
"""


async def test_a_toml_config_builds_working_wired_stores(redis_url: str, tmp_path: Path) -> None:
    from cas.disk.store import DiskStore

    text = CONFIG.format(redis_url=redis_url, prefix=f"config:{uuid.uuid4().hex}:", disk=tmp_path / "large")
    stores = await build_stores(tomllib.loads(text)["stores"])
    try:
        cas = stores["cas"]
        assert isinstance(cas, VerifyingStore) and cas.inner is stores["cached"]
        cached = stores["cached"]
        assert isinstance(cached, ReadCachingStore) and cached.write_to_fast
        assert cached.fast is stores["hot"] and cached.slow is stores["tiered"]
        tiered = stores["tiered"]
        assert isinstance(tiered, SizePartitioningStore) and tiered.threshold == 64 << 10
        assert tiered.small is stores["redis-small"] and tiered.large is stores["disk-large"]
        redis = stores["redis-small"]
        assert isinstance(redis, RedisStore)
        assert redis.max_value_size == 1 << 20 and redis.ttl_ms == 3 * 3600 * 1000
        assert isinstance(stores["disk-large"], DiskStore)
        assert isinstance(stores["hot"], MemoryStore) and stores["hot"].max_bytes == 64 << 20

        small_digest, small = blob(1, 100)
        large_digest, large = blob(2, 200_000)
        await cas.put_bytes(small_digest, small)
        await cas.write(large_digest, chunks_of(large))
        assert await redis.get_bytes(small_digest) == small
        assert await stores["disk-large"].get_bytes(large_digest) == large
        assert await read_all(cas, large_digest) == large
        assert await cas.find_missing([small_digest, large_digest, Digest.empty()]) == set()
    finally:
        await close_stores(stores)


async def test_redis_defaults_need_no_keys() -> None:
    stores = await build_stores({"r": {"type": "redis"}})
    try:
        redis = stores["r"]
        assert isinstance(redis, RedisStore)
        assert redis.key_prefix == "reapi:r:" and redis.ttl_ms == 0 and redis.max_value_size == 64 << 20
        assert redis.location == "redis://127.0.0.1:6379/0"
    finally:
        await close_stores(stores)


# -- ${VAR} in string values ----------------------------------------------------------


def test_env_references_expand_and_dollar_dollar_is_a_dollar() -> None:
    env = {"HOST": "cache.internal", "EMPTY": ""}
    assert expand_env("redis://${HOST}:6379/0", env=env) == "redis://cache.internal:6379/0"
    assert expand_env("pa$$word${EMPTY}", env=env) == "pa$word"
    assert expand_env("$$${HOST}", env=env) == "$cache.internal"
    assert expand_env("cost $5 and $HOST", env=env) == "cost $5 and $HOST"  # other $ are kept
    assert expand_env("$HOME/x", env={"HOME": "/h"}, bare=True) == "/h/x"  # paths: bare $NAME too


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${NOT_SET_ANYWHERE}", r"^\[server\] key 'listen': environment variable NOT_SET_ANYWHERE is not set"),
        ("${HOST", r"'\$\{HOST' is not a \$\{NAME\} reference \(write \$\$ for a literal \$\)"),
        ("${1X}", r"'\$\{1X\}' is not a \$\{NAME\} reference"),
    ],
)
def test_env_reference_mistakes_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand_env(text, "[server] key 'listen'", env={"HOST": "h"})


def test_store_keys_take_values_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REAPI_TEST_REDIS", "10.0.0.5")
    monkeypatch.setenv("REAPI_TEST_ROOT", str(tmp_path))
    monkeypatch.setenv("REAPI_TEST_SIZE", "2GiB")
    redis = read_store_spec("r", {"type": "redis", "url": "redis://:a$$b@${REAPI_TEST_REDIS}:6379/1"})
    assert isinstance(redis, RedisSpec) and redis.url == "redis://:a$b@10.0.0.5:6379/1"
    disk = read_store_spec("d", {"type": "disk", "path": "${REAPI_TEST_ROOT}/cas", "max_size": "${REAPI_TEST_SIZE}"})
    assert isinstance(disk, DiskSpec) and disk.path == tmp_path / "cas" and disk.max_size == 2 << 30
    with pytest.raises(ConfigError, match=r"^store 'r' key 'url': environment variable REAPI_TEST_UNSET is not set"):
        read_store_spec("r", {"type": "redis", "url": "redis://${REAPI_TEST_UNSET}"})


# -- specs: one dataclass per type ------------------------------------------------------


def test_each_type_is_one_spec_whose_fields_are_its_keys_and_defaults() -> None:
    assert STORE_TYPES == ("memory", "disk", "redis", "verify", "size_partition", "read_cache", "grpc", "packed",
                           "sharding", "mirrored")
    spec = read_store_spec("p", {"type": "packed"})
    assert spec == PackedSpec() and spec.max_size == 4 << 30 and spec.max_value_size == 1 << 20
    assert read_store_spec("sp", {"type": "size_partition", "small": "a", "large": "b"}) == SizePartitionSpec("a", "b")
    assert read_store_spec("m", {"type": "memory", "max_size": 1024}) == MemorySpec(max_size=1024)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "packd"}, r"^store 'x': unknown type 'packd' \(did you mean 'packed'\? known: memory, disk"),
        ({"type": "disk", "max_szie": "1GiB"}, r"^store 'x' \(disk\): unknown key 'max_szie' \(did you mean 'max_size'\?"),
        (
            {"type": "disk", "pth": "/x", "colour": 1},
            r"^store 'x' \(disk\): unknown keys 'colour', 'pth' \(did you mean 'path' for 'pth'\? known: path, max_size, fsync, mapped_reads\)",
        ),
        ({"type": "disk", "path": 7}, r"^store 'x' key 'path': expected a path, got 7"),
        ({"type": "grpc"}, r"^store 'x' \(grpc\): missing required key 'address'"),
    ],
)
def test_spec_mistakes_are_one_line_naming_store_and_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        read_store_spec("x", table)
    assert "\n" not in str(caught.value)


async def test_sharding_and_mirrored_from_toml() -> None:
    tables = tomllib.loads("""
        [stores.n1]
        type = "memory"
        [stores.n2]
        type = "memory"
        [stores.n3]
        type = "memory"
        [stores.pair]
        type = "mirrored"
        a = "n2"
        b = "n3"
        [stores.shards]
        type = "sharding"
        shards = [{ store = "n1" }, { store = "pair", weight = 2 }]
    """)["stores"]
    spec = read_store_spec("shards", tables["shards"])
    assert spec == ShardingSpec((ShardSpec("n1", 1.0), ShardSpec("pair", 2.0)))
    order = build_order(tables)
    assert order.index("pair") < order.index("shards") and order.index("n3") < order.index("pair")
    stores = await build_stores(tables)
    try:
        shards, pair = stores["shards"], stores["pair"]
        assert isinstance(shards, ShardingStore) and isinstance(pair, MirroredStore)
        assert [(s.store, s.weight) for s in shards.shards] == [(stores["n1"], 1.0), (pair, 2.0)]
        assert (pair.a, pair.b) == (stores["n2"], stores["n3"])
    finally:
        await close_stores(stores)


async def test_a_shared_child_is_built_once() -> None:
    stores = await build_stores({
        "hot": {"type": "memory"}, "cold": {"type": "memory"},
        "a": {"type": "read_cache", "fast": "hot", "slow": "cold"},
        "b": {"type": "verify", "inner": "cold"},
    })
    try:
        a, b = stores["a"], stores["b"]
        assert isinstance(a, ReadCachingStore) and isinstance(b, VerifyingStore)
        assert a.slow is b.inner is stores["cold"]
    finally:
        await close_stores(stores)
