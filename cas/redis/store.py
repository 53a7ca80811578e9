"""RedisStore: values in Redis strings, for small blobs and the action cache.

Each value is one Redis string under ``key_prefix + digest.key``. Redis is fast for
many small values and can be shared by several server replicas; it is a poor home
for large blobs (every value lives in RAM and a write is buffered here before its
single SET), hence ``max_value_size``. Pair it with a disk store through
``size_partition`` for a CAS.

Round trips, and redis-py's per-command cost in Python, are what count, so every
call is one command: find_missing a Lua script over all keys (per 8k), get_many one
MGET, put_many one MSET (scripts instead when lifetimes must be set or refreshed),
each chunk of a streamed read one script. With ``ttl_seconds`` set every access
(find_missing, reads, writes) pushes the expiry out again, so referenced blobs
stay; without it, accesses TOUCH keys so an ``allkeys-lru`` Redis evicts the
coldest ones. Multi-key commands need a standalone Redis, not Redis Cluster.

Writes are all or nothing for free: chunks are collected and sent as one SET only
after the stream ended cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager

import redis.asyncio as aioredis

from cas.digest import ALGORITHMS, Digest
from cas.errors import Aborted, NotFound, ReapiError, ResourceExhausted
from cas.redis.connection import DEFAULT_TIMEOUT, RedisGuard, connect, redacted_url
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range

# Keys per find_missing script call. One script blocks Redis while it runs; 8k
# TOUCHes take a few milliseconds. Larger requests run several calls concurrently.
FIND_MISSING_BATCH = 8192

# ARGV[1]: lifetime in ms, or 0 to only TOUCH (for LRU eviction). ARGV[2]: the keys,
# newline-separated. One argument instead of one per key: redis-py packs arguments
# in Python, and for 10k keys that packing cost more than Redis's work (see
# tests/benchmarks/bench_redis_store.py). Keys not declared in KEYS are fine on a
# standalone Redis; Redis Cluster is not supported (MGET across slots fails too).
# Returns the 1-based positions of absent keys, so the reply is small when most exist.
_FIND_MISSING_LUA = """
local ttl = tonumber(ARGV[1])
local missing = {}
local i = 0
for key in string.gmatch(ARGV[2], "[^\\n]+") do
  i = i + 1
  local found
  if ttl > 0 then found = redis.call('PEXPIRE', key, ttl) else found = redis.call('TOUCH', key) end
  if found == 0 then missing[#missing + 1] = i end
end
return missing
"""

# MGET that also refreshes the lifetime of each key found. ARGV[1]: lifetime in ms.
_GET_AND_REFRESH_LUA = """
local ttl = tonumber(ARGV[1])
local values = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then redis.call('PEXPIRE', key, ttl) end
  values[i] = value
end
return values
"""


# One chunk of a streamed read, with the value's current size, in one round trip
# (a MULTI pipeline of the same commands costs twice as much in redis-py).
# KEYS[1]: the key. ARGV[1]: lifetime in ms, or 0 to TOUCH. ARGV[2], ARGV[3]: the
# first and last byte. Returns nil if the key is absent, else {size, bytes}.
_READ_CHUNK_LUA = """
local key = KEYS[1]
local found
if tonumber(ARGV[1]) > 0 then found = redis.call('PEXPIRE', key, ARGV[1]) else found = redis.call('TOUCH', key) end
if found == 0 then return false end
return {redis.call('STRLEN', key), redis.call('GETRANGE', key, ARGV[2], ARGV[3])}
"""

# MSET with a lifetime. KEYS: the keys. ARGV[1]: lifetime in ms; ARGV[i + 1]: value of KEYS[i].
_SET_WITH_TTL_LUA = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
end
return #KEYS
"""


def describe_client(client: aioredis.Redis) -> str:
    """Where a client connects, as a password-free URL."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisStore(BlobStore):
    """Values as Redis strings; bulk calls in one round trip each."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str = "reapi:",
        max_value_size: int = 64 << 20,
        name: str = "redis",
        ttl_seconds: float | None = None,
        read_chunk_size: int = READ_CHUNK_SIZE,
        location: str | None = None,
    ) -> None:
        """``client`` must return bytes (decode_responses off). The store closes it in aclose."""
        if "\n" in key_prefix:
            raise ValueError(f"redis key_prefix {key_prefix!r} must not contain a newline")
        self.client = client
        self.key_prefix = key_prefix
        # key() is on every hot path; precompute "<prefix><function>/" per function.
        self._prefix_by_function = {f: f"{key_prefix}{a.name}/" for f, a in ALGORITHMS.items()}
        self.max_value_size = max_value_size
        self.name = name
        self.ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        self.read_chunk_size = read_chunk_size
        self.location = location or describe_client(client)
        self.guard = RedisGuard(f"{name}: redis at {self.location}")
        self._find_missing_script = client.register_script(_FIND_MISSING_LUA)
        self._get_and_refresh_script = client.register_script(_GET_AND_REFRESH_LUA)
        self._set_with_ttl_script = client.register_script(_SET_WITH_TTL_LUA)
        self._read_chunk_script = client.register_script(_READ_CHUNK_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "reapi:",
        max_value_size: int = 64 << 20,
        name: str = "redis",
        ttl_seconds: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 1,
    ) -> RedisStore:
        """A store with its own connection pool; nothing connects until first use.

        Every call has ``timeout`` and is retried (``retries``) only when a pooled
        connection turned out dead: a client of this server retries UNAVAILABLE
        itself, and a stalled call holds a build's worker slot
        (cas/redis/connection.py).
        """
        client = connect(url, timeout=timeout, retries=retries)
        return cls(client, key_prefix, max_value_size, name, ttl_seconds, location=redacted_url(url))

    def key(self, digest: Digest) -> str:
        """``key_prefix + digest.key``, built without the property's lookups."""
        return f"{self._prefix_by_function[digest.function]}{digest.hash}-{digest.size_bytes}"

    @contextmanager
    def _redis_errors(self, doing: str) -> Iterator[None]:
        """redis-py exceptions as the error family, naming the server (no password);
        fails at once while Redis is known to be away (RedisGuard)."""
        with self.guard.calling(doing):
            yield

    # -- existence -----------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        unique = list(dict.fromkeys(digests))
        if not unique:
            return set()
        batches = [unique[i : i + FIND_MISSING_BATCH] for i in range(0, len(unique), FIND_MISSING_BATCH)]
        with self._redis_errors(f"checking {len(unique)} digests"):
            replies = await asyncio.gather(
                *(self._find_missing_script(args=[self.ttl_ms, "\n".join(map(self.key, batch))]) for batch in batches)
            )
        return {batch[i - 1] for batch, positions in zip(batches, replies) for i in positions}

    # -- reads ---------------------------------------------------------------------

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        # Reject negative offsets and limits before Redis reads them as "from the end".
        check_read_range(digest, max(offset, 0), offset, limit)
        key = self.key(digest)
        first_end = offset + min(self.read_chunk_size, limit or self.read_chunk_size)
        reply = await self._read_chunk(key, offset, first_end, f"reading {digest}")
        if reply is None:
            raise NotFound(f"{digest} not found in {self.name}")
        size, first = reply
        end = check_read_range(digest, size, offset, limit)
        first = first[: end - offset]
        if first:
            yield first
        position = offset + len(first)
        while position < end:
            stop = min(end, position + self.read_chunk_size)
            reply = await self._read_chunk(key, position, stop, f"reading {digest} at offset {position}")
            # Values under one key never change in a CAS; an AC value may be
            # replaced, or any value expire or be evicted, while a reader streams.
            if reply is None:
                raise NotFound(f"{digest} was evicted from {self.name} during the read, at offset {position}")
            if reply[0] != size:
                raise Aborted(f"{digest} changed in {self.name} during the read, at offset {position}; retry")
            yield reply[1]
            position = stop

    async def _read_chunk(self, key: str, start: int, stop: int, doing: str) -> tuple[int, bytes] | None:
        """Bytes [start, stop) of ``key`` and its size, or None if absent."""
        with self._redis_errors(doing):
            reply = await self._read_chunk_script(keys=[key], args=[self.ttl_ms, start, stop - 1])
        return None if reply is None else (int(reply[0]), reply[1])

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        unique = list(dict.fromkeys(digests))
        if not unique:
            return {}
        keys = [self.key(d) for d in unique]
        with self._redis_errors(f"reading {len(unique)} values"):
            if self.ttl_ms:
                values = await self._get_and_refresh_script(keys=keys, args=[self.ttl_ms])
            else:
                values = await self.client.mget(keys)
        return {d: v for d, v in zip(unique, values) if v is not None}

    # -- writes --------------------------------------------------------------------

    def _too_large(self, digest: Digest, size: str) -> ResourceExhausted:
        return ResourceExhausted(
            f"{digest}: value of {size} bytes is over {self.name}'s max_value_size of {self.max_value_size} bytes"
        )

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        parts = []
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > self.max_value_size:
                raise self._too_large(digest, f"at least {total}")
            parts.append(chunk)
        data = b"".join(parts)
        with self._redis_errors(f"writing {digest}"):
            await self.client.set(self.key(digest), data, px=self.ttl_ms or None)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        """One MSET (or one script that also sets lifetimes): all stored or none."""
        failures: dict[Digest, ReapiError] = {}
        sent: dict[str, bytes] = {}
        for digest, data in blobs.items():
            if len(data) > self.max_value_size:
                failures[digest] = self._too_large(digest, str(len(data)))
            else:
                sent[self.key(digest)] = data
        if not sent:
            return failures
        try:
            with self._redis_errors(f"writing {len(sent)} values"):
                if self.ttl_ms:
                    await self._set_with_ttl_script(keys=list(sent), args=[self.ttl_ms, *sent.values()])
                else:
                    await self.client.mset(sent)
        except ReapiError as err:
            failures.update((d, err) for d in blobs if d not in failures)
        return failures

    async def aclose(self) -> None:
        await self.client.aclose()
