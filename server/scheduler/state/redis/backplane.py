"""What one server replica keeps open towards the shared Redis: the backplane.

One client (with the timeouts and fail-fast guard of cas/redis/connection.py), the
registered scripts, the pub/sub listener that wakes local waiters (wakeups.py), and
this replica's heartbeat. The scheduler state (state.py) and the log streams
(logstreams.py) share it, so a replica has one subscription and one heartbeat.

The heartbeat (``replica:ID``, renewed every 2 s, gone 10 s after the last renewal)
is what the scripts ask before they trust anything this replica left in Redis
about work in progress: calls it counts for a session, results it is storing.
"""

from __future__ import annotations

import asyncio
import logging
import os

from cas.errors import Unavailable
from cas.redis.connection import DEFAULT_TIMEOUT, RedisGuard, connect, redacted_url
from server.scheduler.locality import FIFO, Dispatch
from server.scheduler.state.redis.scripts import Scripts
from server.scheduler.state.redis.wakeups import Wakeups

log = logging.getLogger("reapi.scheduler.redis")

HEARTBEAT_EVERY = 2.0
HEARTBEAT_TTL_MS = 10_000
# Finished records live at most this much longer than operation_retention in Redis
# itself, should no replica be left to drop them.
RECORD_TTL_MARGIN = 3600.0
DEFAULT_PREFIX = "reapi:scheduler:"


class Backplane:
    def __init__(self, url: str, key_prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = redacted_url(url)
        self.prefix = key_prefix
        self.replica = os.urandom(8).hex()
        self.client = connect(url, timeout=timeout)
        self.timeout = timeout
        self.where = f"scheduler: redis at {self.url}"
        self.guard = RedisGuard(self.where)
        # The context every script reads first (lua/prelude.lua); configure() sets the
        # parts that come from [execution].
        self.scripts = Scripts(self.client, self.guard, [key_prefix, os.urandom(16).hex(), "1", 600.0,
                                                         int((600.0 + RECORD_TTL_MARGIN) * 1000), self.replica])
        self.wakeups = Wakeups(self.client, key_prefix + "wake", self.where)
        self._heartbeat: asyncio.Task[None] | None = None
        self._users = 0
        self._closed = False

    def configure(self, logs: bool, operation_retention: float, dispatch: Dispatch = FIFO) -> None:
        """Whether leases get log streams, how long finished records are kept, and the dispatch rule."""
        self.scripts.set_dispatch(dispatch)
        self.scripts.context[2:5] = ["1" if logs else "0", operation_retention,
                                     int((operation_retention + RECORD_TTL_MARGIN) * 1000)]

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    async def started(self) -> None:
        """Start listening and beating on first use (a running event loop is needed)."""
        if self._closed:
            raise Unavailable(f"{self.where}: this server is shutting down")
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat_forever(), name="reapi-scheduler-heartbeat")
            self.wakeups.start()
            await self._beat()
        if not self.wakeups.subscribed.is_set():
            if self.guard.is_down:  # Redis is known to be away: fail now, not after a timeout
                raise Unavailable(f"{self.where} is unreachable: failing fast, no subscription to its wake-ups "
                                  f"and its last call failed")
            # Waiters registered before the subscription is up could miss a wake-up.
            try:
                await asyncio.wait_for(self.wakeups.subscribed.wait(), self.timeout)
            except TimeoutError:
                raise Unavailable(f"{self.where} is unreachable: no subscription to its wake-ups after "
                                  f"{self.timeout:g}s") from None

    async def _beat(self) -> None:
        await self.scripts.command("renewing this replica's heartbeat", "SET", self.key("replica", self.replica),
                                   "1", "PX", HEARTBEAT_TTL_MS)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                await self._beat()
            except Exception as exc:  # noqa: BLE001 - Redis away: try again at the next beat
                log.debug("%s: heartbeat failed: %s", self.where, exc)

    def acquire(self) -> Backplane:
        """Count a user (the state, the log streams); the last ``release`` closes."""
        self._users += 1
        return self

    async def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self._closed = True  # calls still running (the server stops its RPCs next) fail now
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
            try:
                await self.client.delete(self.key("replica", self.replica))  # its calls stop counting at once
            except Exception:  # noqa: BLE001 - Redis away: the key expires by itself
                pass
        await self.wakeups.aclose()
        await self.client.aclose()
