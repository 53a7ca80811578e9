"""The StateFactory of the Redis state (``redis_state``): one backplane per server it
builds, shared by that server's state and log streams."""

from __future__ import annotations

from cas.redis.connection import DEFAULT_TIMEOUT
from server.scheduler.clock import Clock
from server.scheduler.interface import LogStreamFactory, SchedulerSettings
from server.scheduler.platform import PlatformMatcher
from server.scheduler.state.redis.backplane import DEFAULT_PREFIX, Backplane
from server.scheduler.state.redis.logstreams import RedisLogStreams
from server.scheduler.state.redis.state import RedisState


class RedisStateFactory:
    """The StateFactory of the Redis state; it also makes the log streams that go with
    it (log streams must be in Redis too, since a bot writes them on any replica)."""

    def __init__(self, url: str, key_prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.timeout = timeout
        self._backplane: Backplane | None = None
        self._streams_made = False

    def backplane(self) -> Backplane:
        if self._backplane is None:
            self._backplane = Backplane(self.url, self.key_prefix, self.timeout)
        return self._backplane

    def log_streams(self, clock: Clock, max_bytes: int, retention: float) -> RedisLogStreams:
        """The log streams of the next state this factory makes (call it first)."""
        self._streams_made = True
        return RedisLogStreams(self.backplane().acquire(), clock, max_bytes=max_bytes, retention=retention)

    def __call__(
        self, matcher: PlatformMatcher, settings: SchedulerSettings, log_streams: LogStreamFactory | None, clock: Clock
    ) -> RedisState:
        backplane = self.backplane().acquire()
        logs = self._streams_made or log_streams is not None
        self._backplane, self._streams_made = None, False  # a later server gets a backplane of its own
        return RedisState(backplane, matcher, settings, clock, logs=logs)


def redis_state(url: str, key_prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT) -> RedisStateFactory:
    """The StateFactory of a Redis state at ``url`` under ``key_prefix``."""
    return RedisStateFactory(url, key_prefix, timeout)
