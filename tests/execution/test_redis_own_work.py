"""The Redis state's Lua judgement of an action a script gives on its own (lua/locality.lua
``holds_already``) against locality.own_work of locality.held_bytes, case by case.

A script that gives a queued action to a bot by itself (a claim's fill, an urgent
action, the one waiting bot) decides in Lua whether that was the bot's own work (no
progress for the executions waiting for it), from the bot's filter and the keys it
expects: the same bytes Python reads, so the two must agree on every case, including
an action missing a file under ``min_gain`` (own) or one over it (not own).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from server.scheduler.locality import LOCALITY, held_bytes, own_work, record_keys, sketch_of, sketch_total
from server.scheduler.state.redis.scripts import _lua, dispatch_header

JUDGE = """
local name, sketch, expected = arg(1), arg(2), arg(4)
redis.call('HSET', key('s', name), 'sum', arg(3))
for i = 1, #expected, 8 do redis.call('ZADD', key('sx', name), i, string.sub(expected, i, i + 7)) end
return holds_already(name, sketch) and 1 or 0
"""


@pytest.fixture
async def judge(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.from_url(redis_url)
    try:
        yield client, dispatch_header(LOCALITY) + _lua("prelude") + "\n" + _lua("locality") + "\n" + JUDGE
    finally:
        await client.aclose()


def _files(rng: random.Random) -> list[Digest]:
    """Up to 20 input files, big and small (a small one missing leaves an action own work)."""
    sizes = [rng.choice([100, 1000, 3000, 20_000, 64 << 10, 300_000]) for _ in range(rng.randint(1, 20))]
    return [Digest.of(rng.randbytes(12) + bytes(size - 12)) for size in sizes]


async def test_lua_agrees_with_own_work_of_held_bytes(judge: tuple[aioredis.Redis, str]) -> None:
    client, script = judge
    run = client.register_script(script)
    rng = random.Random(13)
    verdicts = {True: 0, False: 0}
    for case in range(300):
        files = _files(rng)
        total = sum(d.size_bytes for d in files) + rng.choice([0, 0, 5000])  # files beyond the sample
        sketch = sketch_of(files, total)
        summary = DigestFilter(rng.choice([64, 8192, 65536]), rng.randint(1, 7))
        for digest in files:
            if rng.random() < 0.85:
                summary.add(digest.hash)
        keys = [k for k in record_keys(sketch) if rng.random() < 0.3]
        name = f"bot-{case}"
        prefix = f"test:{uuid.uuid4().hex}:"
        context: list[str | int] = [prefix, "nonce", "0", 600, 600_000, "replica"]
        expected_bytes = b"".join(k.to_bytes(8, "big") for k in keys)
        got = await run(args=[*context, name, sketch, summary.to_bytes(), expected_bytes])
        want = own_work(LOCALITY, sketch_total(sketch), held_bytes(sketch, summary.to_bytes(), frozenset(keys)))
        assert bool(got) == want, f"case {case}: Lua says {bool(got)}, locality.own_work {want}"
        verdicts[want] += 1
    assert min(verdicts.values()) >= 30, f"both verdicts tried often enough: {verdicts}"
