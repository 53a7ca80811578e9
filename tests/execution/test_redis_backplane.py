"""The Redis state's backplane while Redis is stopped: calls fail at once, then recover.

Once the wake-up subscription is lost (no answer for its silence limit), every call
used to wait ``redis_timeout`` for it to come back before failing; while the guard
knows Redis is away, a call now fails at once and says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cas.errors import Unavailable
from server.scheduler.state.redis.backplane import Backplane
from tests.support.redis_process import RedisProcess, running_redis
from tests.support.waiting import until


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with running_redis(tmp_path / "redis") as process:
        yield process


async def test_calls_fail_fast_while_redis_is_away_and_work_again_after(redis: RedisProcess) -> None:
    backplane = Backplane(redis.url, key_prefix="test:backplane:", timeout=1.0).acquire()
    try:
        backplane.wakeups.start()  # subscribed before the first call, however slow the machine
        await until(backplane.wakeups.subscribed.is_set, "subscribed")
        await backplane.started()
        redis.pause()
        try:
            with pytest.raises(Unavailable):
                await backplane._beat()  # waits out the timeout; the guard now knows
            await until(lambda: not backplane.wakeups.subscribed.is_set(), "lost the subscription")
            with pytest.raises(Unavailable) as caught:
                await backplane.started()
            assert "failing fast" in str(caught.value) and redis.url in str(caught.value)
        finally:
            redis.resume()
        await until(backplane.wakeups.subscribed.is_set, "subscribed again")
        # Calls fail fast until a probe finds Redis back (cas/redis/connection.py: at most
        # one per cooldown); the heartbeat is this replica's probe when no call comes. A
        # call made at once could fall within the last failure's cooldown: it then fails
        # fast, as designed, though Redis is back (it did, under load).
        await until(lambda: not backplane.guard.is_down, "a heartbeat found Redis back")
        await backplane.started()
        await backplane._beat()
        assert not backplane.guard.is_down
    finally:
        await backplane.release()
