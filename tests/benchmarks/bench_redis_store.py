"""RedisStore bulk calls against a private redis-server.

    .venv/bin/python -m tests.benchmarks.bench_redis_store

Rows: find_missing of 10,000 digests (all present, half present, with a ttl), and
put_many / get_many of 1,000 x 1 KiB, and 200 small reads one after another
(streamed and whole), which is what ByteStream and GetActionResult do. For comparison, the same find_missing done
as a pipeline of TOUCH commands, the obvious alternative to the Lua script the
store uses. Each row is the median of several runs.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cas.digest import Digest
from cas.redis.store import RedisStore
from tests.support.processes import redis_server

REPEATS = 7


async def median_seconds(call: Callable[[], Awaitable[object]], repeats: int = REPEATS) -> float:
    await call()  # warm up: connections, script load
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def blobs(count: int, size: int, seed: str) -> dict[Digest, bytes]:
    out = {}
    for i in range(count):
        data = f"{seed}-{i}-".encode().ljust(size, b".")
        out[Digest.of(data)] = data
    return out


async def pipelined_touch(store: RedisStore, digests: list[Digest]) -> set[Digest]:
    pipe = store.client.pipeline(transaction=False)
    for digest in digests:
        pipe.touch(store.key(digest))
    replies = await pipe.execute()
    return {d for d, found in zip(digests, replies) if not found}


async def read_each(store: RedisStore, digests: list[Digest]) -> None:
    for digest in digests:
        async for _ in store.read(digest):
            pass


async def get_each(store: RedisStore, digests: list[Digest]) -> None:
    for digest in digests:
        await store.get_bytes(digest)


async def run(url: str) -> list[tuple[str, int, float]]:
    store = RedisStore.from_url(url, key_prefix="bench:")
    expiring = RedisStore.from_url(url, key_prefix="bench-ttl:", ttl_seconds=3 * 3600)
    rows: list[tuple[str, int, float]] = []
    try:
        present = blobs(10_000, 16, "present")
        absent = list(blobs(5_000, 16, "absent"))
        assert await store.put_many(present) == {}
        assert await expiring.put_many(present) == {}
        all_present = list(present)
        half = all_present[:5_000] + absent

        assert await store.find_missing(half) == set(absent)
        rows.append(("find_missing, all present", 10_000, await median_seconds(lambda: store.find_missing(all_present))))
        rows.append(("find_missing, half present", 10_000, await median_seconds(lambda: store.find_missing(half))))
        rows.append(("find_missing, ttl refresh", 10_000, await median_seconds(lambda: expiring.find_missing(all_present))))
        assert await pipelined_touch(store, half) == set(absent)
        rows.append(("  (pipelined TOUCH instead)", 10_000, await median_seconds(lambda: pipelined_touch(store, all_present))))

        kib = blobs(1_000, 1024, "kib")
        rows.append(("put_many 1 KiB", 1_000, await median_seconds(lambda: store.put_many(kib))))
        assert await store.get_many(kib) == kib
        rows.append(("get_many 1 KiB", 1_000, await median_seconds(lambda: store.get_many(kib))))
        rows.append(("get_many 1 KiB, ttl refresh", 1_000, await median_seconds(lambda: expiring.get_many(kib))))
        few = list(kib)[:200]
        rows.append(("read 1 KiB, one at a time", 200, await median_seconds(lambda: read_each(store, few))))
        rows.append(("get_bytes 1 KiB, one at a time", 200, await median_seconds(lambda: get_each(store, few))))
    finally:
        await store.aclose()
        await expiring.aclose()
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        rows = asyncio.run(run(url))
    print(f"{'operation':32} {'items':>7} {'ms':>9} {'items/s':>11}")
    for name, items, seconds in rows:
        print(f"{name:32} {items:7d} {seconds * 1000:9.2f} {items / seconds:11,.0f}")


if __name__ == "__main__":
    main()
