"""Many calls at once through one Redis client: they wait for a pooled connection.

redis-py's default pool refuses the 101st concurrent call ("Too many connections"),
and the guard then took Redis for dead: a frontend with a few hundred clients or
bots in flight failed every Redis-backed call for a cooldown. The pool is bounded
(connections per process stay few) and a call waits for a free connection, up to
the client's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cas.redis.connection import MAX_CONNECTIONS, connect
from tests.support.redis_process import RedisProcess, running_redis


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with running_redis(tmp_path / "redis") as process:
        yield process


async def test_more_concurrent_calls_than_pooled_connections_all_succeed(redis: RedisProcess) -> None:
    client = connect(redis.url, timeout=30.0)
    calls = 3 * MAX_CONNECTIONS
    try:
        await client.set("key", b"value")
        answers = await asyncio.gather(*(client.get("key") for _ in range(calls)))
        assert answers == [b"value"] * calls
        connections = int((await client.info("clients"))["connected_clients"])
        assert connections <= MAX_CONNECTIONS + 1  # the pool's, and none beyond it
    finally:
        await client.aclose()
