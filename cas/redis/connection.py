"""How reapi reaches Redis: one client per URL, a timeout on every call, and failing fast.

Everything that keeps state in Redis (the ``redis`` store, the scheduler's Redis
state) connects here, so all of it behaves alike when Redis does not:

- **Every call has a timeout** (``timeout``, 2 s by default, for connecting and
  for each reply). A Redis that hangs (stopped, swapping, a network partition)
  makes a call fail after at most that long, never stall a request for as long
  as Redis hangs.
- **Pooled connections, bounded**: at most ``MAX_CONNECTIONS`` per client; a call
  beyond them waits for a free one (up to ``timeout``) instead of failing, so a
  process with hundreds of calls in flight neither fails them nor opens a
  connection each.
- **Fail fast** (``RedisGuard``): after a call fails for want of Redis (refused,
  reset, timed out), calls fail at once with UNAVAILABLE for ``cooldown`` seconds
  instead of each waiting for its own timeout; then one call probes, and when it
  succeeds everything flows again. No restart is needed after Redis returns.
- **Errors name the server** by URL, without its password: UNAVAILABLE when it
  cannot be reached or is read-only (a replica after a failover), RESOURCE_EXHAUSTED
  when it is out of memory, INTERNAL when it refuses a command.
- **URLs**: ``redis://``, ``rediss://`` (TLS) and ``unix://`` as redis-py reads
  them, and ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]``
  for a primary found through Redis Sentinel (redis-py follows it across failovers;
  the password is the primary's). Redis Cluster is not supported: the store and the
  scheduler run multi-key commands and scripts, which a Cluster refuses across hash
  slots. Shard over several ``redis`` stores with the ``sharding`` store instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from cas.errors import Internal, ResourceExhausted, Unavailable

DEFAULT_TIMEOUT = 2.0
DEFAULT_COOLDOWN = 1.0
SENTINEL_SCHEME = "redis+sentinel"
# Connections one client keeps to Redis. A call holds one for a round trip (well under
# a millisecond), so 100 serve thousands of calls a second; more calls wait their turn.
MAX_CONNECTIONS = 100
# redis-py's Sentinel pool cannot wait for a free connection; its bound is set high
# enough that it is never what fails a call (Redis itself takes 10,000 clients).
SENTINEL_MAX_CONNECTIONS = 2000


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hosts}" if user else hosts
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 1) -> aioredis.Redis:
    """A client for ``url`` (returning bytes); nothing connects until first use.

    ``retries`` covers only a dropped connection (a pooled one that Redis closed, or
    a restarted Redis): the call runs again at once on a fresh connection. A
    timeout is never retried, so a hung Redis costs one ``timeout``, not several."""
    if timeout <= 0:
        raise ValueError(f"redis timeout must be positive, got {timeout}")
    retry = Retry(NoBackoff(), retries, supported_errors=(redis_errors.ConnectionError,))
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry}
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL_SCHEME:
        return _through_sentinel(url, options)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis url {redacted_url(url)!r}: unknown scheme {scheme!r} "
                         f"(known: redis, rediss, unix, {SENTINEL_SCHEME})")
    # redis-py's default pool refuses the 101st concurrent call ("Too many connections").
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=timeout, **options)
    return aioredis.Redis.from_pool(pool)


def _through_sentinel(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """``redis+sentinel://[[user]:password@]h1:p1,h2:p2/SERVICE[/DB]``: the SERVICE's primary."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"redis url {redacted_url(url)!r}: {host_port!r} is not HOST:PORT of a sentinel")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"redis url {redacted_url(url)!r}: the path must be /SERVICE or /SERVICE/DB")
    timeouts = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=timeouts)
    return sentinel.master_for(
        unquote(path[0]), db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None, password=unquote(password) or None,
        max_connections=SENTINEL_MAX_CONNECTIONS, **options,
    )


class RedisGuard:
    """Turns redis-py failures into the error family and fails fast while Redis is away.

        with guard.calling("reading 3 values"):
            values = await client.mget(keys)
    """

    def __init__(self, where: str, cooldown: float = DEFAULT_COOLDOWN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.where = where  # "cas-small: redis at redis://10.0.0.5:6379/0", no password
        self.cooldown = cooldown
        self._clock = clock
        self._down_since: float | None = None  # None: calls go through
        self._next_probe = 0.0
        self._probing = False
        self._last_failure = ""

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    @contextmanager
    def calling(self, doing: str) -> Iterator[None]:
        probe = self._admit(doing)
        try:
            yield
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            self._failed(str(exc) or type(exc).__name__)
            raise Unavailable(f"{self.where} is unreachable while {doing}: {exc}") from exc
        except redis_errors.ReadOnlyError as exc:
            raise Unavailable(f"{self.where} is read-only (a replica?) while {doing}: {exc}") from exc
        except redis_errors.OutOfMemoryError as exc:
            raise ResourceExhausted(f"{self.where} is out of memory while {doing}: {exc}") from exc
        except redis_errors.ResponseError as exc:
            raise Internal(f"{self.where} refused a command while {doing}: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise Unavailable(f"{self.where} failed while {doing}: {exc}") from exc
        else:
            if self._down_since is not None:
                self._down_since = None
        finally:
            if probe:
                self._probing = False

    def _admit(self, doing: str) -> bool:
        """Whether this call may reach Redis, and if so whether it is the probe; raise if not."""
        if self._down_since is None:
            return False
        now = self._clock()
        if now >= self._next_probe and not self._probing:
            self._probing = True
            return True
        raise Unavailable(
            f"{self.where} is unreachable while {doing}: failing fast, it has not answered for "
            f"{now - self._down_since:.1f}s (last error: {self._last_failure}); the next try is within "
            f"{max(0.0, self._next_probe - now):.1f}s"
        )

    def _failed(self, reason: str) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        self._next_probe = now + self.cooldown
        self._last_failure = reason
