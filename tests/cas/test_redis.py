"""RedisStore beyond the contract: limits, expiry, round trips and failures, on a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cas.digest import Digest
from cas.errors import Aborted, NotFound, ResourceExhausted, Unavailable
from cas.redis.store import FIND_MISSING_BATCH, RedisStore, redacted_url
from tests.cas.streams import blob, chunks_of, read_all, read_chunks
from tests.support.processes import free_port

TTL = 3600.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A separate connection for looking at what the store left in Redis."""
    async with aioredis.Redis.from_url(redis_url) as conn:
        yield conn


def make_store(redis_url: str, **kwargs: object) -> RedisStore:
    return RedisStore.from_url(redis_url, key_prefix=f"test:{uuid.uuid4().hex}:", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = make_store(redis_url, max_value_size=10_000)
    yield s
    await s.aclose()


@pytest.fixture
async def expiring(redis_url: str) -> AsyncIterator[RedisStore]:
    s = make_store(redis_url, ttl_seconds=TTL)
    yield s
    await s.aclose()


async def test_values_live_under_prefix_and_digest_key(store: RedisStore, client: aioredis.Redis) -> None:
    digest, data = blob(1, 100)
    await store.put_bytes(digest, data)
    assert await client.get(f"{store.key_prefix}sha256/{digest.hash}-100") == data


async def test_key_prefixes_keep_stores_apart(redis_url: str, store: RedisStore) -> None:
    digest, data = blob(2, 100)
    await store.put_bytes(digest, data)
    other = make_store(redis_url)
    try:
        assert await other.find_missing([digest]) == {digest}
    finally:
        await other.aclose()


# -- max_value_size ----------------------------------------------------------------------


async def test_streamed_write_over_the_limit_is_refused_and_not_stored(store: RedisStore) -> None:
    digest, data = blob(3, 10_001)
    with pytest.raises(ResourceExhausted, match="max_value_size of 10000 bytes"):
        await store.write(digest, chunks_of(data, 1000))
    assert await store.find_missing([digest]) == {digest}


async def test_value_at_the_limit_is_stored(store: RedisStore) -> None:
    digest, data = blob(4, 10_000)
    await store.write(digest, chunks_of(data, 3000))
    assert await store.get_bytes(digest) == data


async def test_put_bytes_and_put_many_over_the_limit(store: RedisStore) -> None:
    big_digest, big = blob(5, 10_001)
    small_digest, small = blob(6, 10)
    with pytest.raises(ResourceExhausted, match="10001 bytes"):
        await store.put_bytes(big_digest, big)
    failures = await store.put_many({big_digest: big, small_digest: small})
    assert set(failures) == {big_digest}
    assert isinstance(failures[big_digest], ResourceExhausted)
    assert await store.find_missing([big_digest, small_digest]) == {big_digest}


# -- expiry ---------------------------------------------------------------------------------


async def test_without_ttl_values_do_not_expire(store: RedisStore, client: aioredis.Redis) -> None:
    digest, data = blob(7, 100)
    await store.put_bytes(digest, data)
    assert await client.pttl(store.key(digest)) == -1


async def _shorten(client: aioredis.Redis, key: str) -> None:
    await client.pexpire(key, 5000)
    assert await client.pttl(key) <= 5000


@pytest.mark.parametrize("access", ["find_missing", "has", "read", "get_bytes", "get_many"])
async def test_access_refreshes_the_ttl(expiring: RedisStore, client: aioredis.Redis, access: str) -> None:
    digest, data = blob(8, 3000)
    await expiring.put_many({digest: data})
    key = expiring.key(digest)
    assert await client.pttl(key) > (TTL - 60) * 1000
    await _shorten(client, key)
    match access:
        case "find_missing":
            assert await expiring.find_missing([digest]) == set()
        case "has":
            assert await expiring.has(digest)
        case "read":
            assert await read_all(expiring, digest) == data
        case "get_bytes":
            assert await expiring.get_bytes(digest) == data
        case "get_many":
            assert await expiring.get_many([digest, blob(9, 1)[0]]) == {digest: data}
    assert await client.pttl(key) > (TTL - 60) * 1000


async def test_writes_set_the_ttl(expiring: RedisStore, client: aioredis.Redis) -> None:
    streamed, data = blob(10, 3000)
    await expiring.write(streamed, chunks_of(data, 1000))
    put, small = blob(11, 10)
    await expiring.put_bytes(put, small)
    for digest in (streamed, put):
        assert (TTL - 60) * 1000 < await client.pttl(expiring.key(digest)) <= TTL * 1000


# -- round trips ------------------------------------------------------------------------------


async def _script_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_find_missing_is_one_script_call_per_batch(store: RedisStore, client: aioredis.Redis) -> None:
    present = dict(blob(seed, 20) for seed in range(100, 150))
    await store.put_many(present)
    await store.find_missing(list(present)[:1])  # loads the script
    asked = [*present, *(blob(seed, 20)[0] for seed in range(1000, 1000 + FIND_MISSING_BATCH))]
    before = await _script_calls(client)
    missing = await store.find_missing(asked)
    after = await _script_calls(client)
    assert missing == set(asked) - set(present)
    assert after - before == 2  # FIND_MISSING_BATCH + 50 keys make two batches


# -- values that change under a reader --------------------------------------------------------


async def test_value_evicted_during_a_read(redis_url: str, client: aioredis.Redis) -> None:
    store = make_store(redis_url)
    store.read_chunk_size = 1000
    try:
        digest, data = blob(12, 5000)
        await store.put_bytes(digest, data)
        chunks = store.read(digest)
        assert await anext(chunks) == data[:1000]
        await client.delete(store.key(digest))
        with pytest.raises(NotFound, match="evicted .* during the read, at offset 1000"):
            await anext(chunks)
    finally:
        await store.aclose()


async def test_value_replaced_during_a_read(redis_url: str, client: aioredis.Redis) -> None:
    store = make_store(redis_url)
    store.read_chunk_size = 1000
    try:
        digest, data = blob(13, 5000)
        await store.put_bytes(digest, data)
        chunks = store.read(digest)
        assert await anext(chunks) == data[:1000]
        await client.set(store.key(digest), b"a different, shorter action result")
        with pytest.raises(Aborted, match="changed"):
            await anext(chunks)
    finally:
        await store.aclose()


async def test_chunked_ranged_read(redis_url: str) -> None:
    store = make_store(redis_url)
    store.read_chunk_size = 1000
    try:
        digest, data = blob(14, 5000)
        await store.put_bytes(digest, data)
        chunks = await read_chunks(store, digest, offset=500, limit=2600)
        assert [len(c) for c in chunks] == [1000, 1000, 600]
        assert b"".join(chunks) == data[500:3100]
    finally:
        await store.aclose()


# -- failures -----------------------------------------------------------------------------------


def test_redacted_url_drops_only_the_password() -> None:
    assert redacted_url("redis://user:hunter2@redis.example:6380/2") == "redis://user@redis.example:6380/2"
    assert redacted_url("redis://:hunter2@10.0.0.1/0") == "redis://10.0.0.1/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_unreachable_redis_is_unavailable_naming_the_url_without_password() -> None:
    port = free_port()  # nothing listens here
    store = RedisStore.from_url(f"redis://:hunter2@127.0.0.1:{port}/0", retries=0, name="cas-small")
    digest, data = blob(15, 100)
    calls = {
        "find_missing": lambda: store.find_missing([digest]),
        "has": lambda: store.has(digest),
        "read": lambda: read_chunks(store, digest),
        "get_bytes": lambda: store.get_bytes(digest),
        "get_many": lambda: store.get_many([digest]),
        "write": lambda: store.write(digest, chunks_of(data)),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(Unavailable) as caught:
                await call()
            message = caught.value.message
            assert f"cas-small: redis at redis://127.0.0.1:{port}/0 is unreachable" in message, name
            assert "hunter2" not in message, name
        failures = await store.put_many({digest: data})
        assert isinstance(failures[digest], Unavailable)
        assert f"redis://127.0.0.1:{port}/0 is unreachable" in failures[digest].message
    finally:
        await store.aclose()


async def test_redis_out_of_memory_is_resource_exhausted(store: RedisStore, client: aioredis.Redis) -> None:
    digest, data = blob(16, 100)
    await client.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResourceExhausted, match="out of memory"):
            await store.put_bytes(digest, data)
        failures = await store.put_many({digest: data})
        assert isinstance(failures[digest], ResourceExhausted)
    finally:
        await client.config_set("maxmemory", 0)
    assert await store.find_missing([digest]) == {digest}


async def test_empty_digest_is_not_special_without_verify(store: RedisStore) -> None:
    """Only VerifyingStore treats the empty blob as always present."""
    assert await store.find_missing([Digest.empty()]) == {Digest.empty()}
