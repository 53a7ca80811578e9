"""The redis store when Redis is not well: hung (SIGSTOP), killed, restarted, failed over.

Each test runs its own redis-server (tests/support/redis_process.py) and one store
that is never rebuilt: recovery must happen without restarting anything of ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cas.errors import ReapiError, Unavailable
from cas.redis.store import RedisStore
from cas.redis.connection import RedisGuard, connect, redacted_url
from tests.cas.streams import blob, chunks_of, read_chunks
from tests.support.redis_process import RedisProcess, SentinelProcess, running_redis
from tests.support.waiting import eventually



@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with running_redis(tmp_path / "redis", appendonly=True) as process:
        yield process


async def test_a_hung_redis_fails_calls_with_unavailable_then_recovers(redis: RedisProcess) -> None:
    store = RedisStore.from_url(redis.url, key_prefix="hung:", name="cas-small", timeout=0.5)
    digest, data = blob(1, 100)
    try:
        await store.put_bytes(digest, data)
        redis.pause()
        try:
            # The first call waits out its timeout; the guard then fails the others at once.
            with pytest.raises(Unavailable, match=f"cas-small: redis at {redis.url} is unreachable"):
                await store.get_bytes(digest)
            for call in (store.find_missing([digest]), store.get_many([digest]), read_chunks(store, digest),
                         store.write(digest, chunks_of(data))):
                with pytest.raises(Unavailable, match=f"redis at {redis.url} is unreachable .*failing fast"):
                    await call
            failures = await store.put_many({digest: data})
            assert isinstance(failures[digest], Unavailable)
        finally:
            redis.resume()
        assert await eventually(lambda: store.get_bytes(digest), ReapiError) == data
        assert not store.guard.is_down
        assert await store.find_missing([digest]) == set()
    finally:
        await store.aclose()


async def test_a_killed_redis_is_unavailable_and_its_restart_is_picked_up(redis: RedisProcess) -> None:
    store = RedisStore.from_url(redis.url, key_prefix="killed:", name="ac", timeout=0.5)
    digest, data = blob(2, 100)
    try:
        await store.put_bytes(digest, data)
        await asyncio.to_thread(redis.kill)
        with pytest.raises(Unavailable, match=f"ac: redis at {redis.url} is unreachable"):
            await store.find_missing([digest])
        await asyncio.to_thread(redis.start)  # same port; AOF brings the value back
        assert await eventually(lambda: store.get_bytes(digest), ReapiError) == data
        other, other_data = blob(3, 100)
        await store.put_bytes(other, other_data)
        assert await store.get_many([digest, other]) == {digest: data, other: other_data}
    finally:
        await store.aclose()


async def test_through_sentinel_across_a_failover(tmp_path: Path) -> None:
    primary = RedisProcess(tmp_path / "primary")
    replica = RedisProcess(tmp_path / "replica")
    replica.extra = ["--replicaof", "127.0.0.1", str(primary.port)]
    sentinel = SentinelProcess(tmp_path / "sentinel", primary.port, service="reapi", down_after_ms=500)
    processes = [primary, replica, sentinel]
    for process in processes:
        await asyncio.to_thread(process.start)
    url = f"redis+sentinel://:secret@127.0.0.1:{sentinel.port}/reapi/0"
    store = RedisStore.from_url(url, key_prefix="sentinel:", name="cas-small", timeout=0.5)
    try:
        assert store.location == f"redis+sentinel://127.0.0.1:{sentinel.port}/reapi/0"
        digest, data = blob(4, 100)
        await eventually(lambda: store.put_bytes(digest, data), ReapiError)
        # The value reached the replica before its primary dies.
        on_replica = RedisStore.from_url(replica.url, key_prefix="sentinel:", name="replica")
        await eventually(lambda: on_replica.get_bytes(digest), ReapiError)
        await on_replica.aclose()
        await asyncio.to_thread(primary.kill)
        # Sentinel promotes the replica; the same store finds it.
        assert await eventually(lambda: store.get_bytes(digest), ReapiError) == data
        other, other_data = blob(5, 100)
        await eventually(lambda: store.put_bytes(other, other_data), ReapiError)
        assert await store.get_bytes(other) == other_data
    finally:
        await store.aclose()
        for process in processes:
            process.stop()


def test_sentinel_and_other_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'redis\\+cluster'"):
        connect("redis+cluster://127.0.0.1:7000")
    with pytest.raises(ValueError, match="/SERVICE or /SERVICE/DB"):
        connect("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="not HOST:PORT of a sentinel"):
        connect("redis+sentinel://127.0.0.1/reapi")
    with pytest.raises(ValueError, match="positive"):
        connect("redis://127.0.0.1", timeout=0)
    assert redacted_url("redis+sentinel://:pw@h1:26379,h2:26379/reapi/1") == "redis+sentinel://h1:26379,h2:26379/reapi/1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_guard_fails_fast_lets_one_probe_through_and_closes_on_success() -> None:
    import redis.exceptions as redis_errors

    clock = FakeClock()
    guard = RedisGuard("scheduler: redis at redis://r:6379/0", cooldown=1.0, clock=clock)
    with pytest.raises(Unavailable, match="unreachable while polling: Timeout reading"):
        with guard.calling("polling"):
            raise redis_errors.TimeoutError("Timeout reading from socket")
    assert guard.is_down
    with pytest.raises(Unavailable, match="failing fast, it has not answered for 0.0s .*next try is within 1.0s"):
        with guard.calling("polling"):
            raise AssertionError("must not be reached")
    clock.now += 1.0
    with guard.calling("probing"):  # the probe goes through ...
        with pytest.raises(Unavailable, match="failing fast"):
            with guard.calling("another call meanwhile"):  # ... alone
                pass
    assert not guard.is_down
    with guard.calling("after"):
        pass
