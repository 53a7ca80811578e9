"""RedisStore: values in Redis strings, for small blobs and the action cache.

Each value is one Redis string under ``key_prefix + digest.key``. Redis is fast for
many small values and can be shared by several server replicas; it is a poor home
for large blobs (every value lives in RAM and a write is buffered here before its
single SET), hence ``max_value_size``. Pair it with a disk store through
``size_partition`` for a CAS.

Round trips are what cost with Redis, so the bulk calls make one each:
find_missing runs a Lua script over all keys, get_many is one MGET (or a script when
lifetimes must be refreshed), put_many one pipeline. With ``ttl_seconds`` set every
access (find_missing, reads) pushes the expiry out again, so referenced blobs stay;
without it, accesses TOUCH keys so an ``allkeys-lru`` Redis evicts the coldest ones.

Writes are all or nothing for free: chunks are collected and sent as one SET only
after the stream ended cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from cas.digest import Digest
from cas.errors import Aborted, Internal, NotFound, ReapiError, ResourceExhausted, Unavailable
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range

# Keys per find_missing script call. One script blocks Redis while it runs; 8k
# TOUCHes take a few milliseconds. Larger requests run several calls concurrently.
FIND_MISSING_BATCH = 8192

# KEYS: the keys to check. ARGV[1]: lifetime in ms, or 0 to only TOUCH (LRU).
# Returns the 1-based positions of absent keys, so the reply is small when most exist.
_FIND_MISSING_LUA = """
local ttl = tonumber(ARGV[1])
local missing = {}
for i, key in ipairs(KEYS) do
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


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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
        self.client = client
        self.key_prefix = key_prefix
        self.max_value_size = max_value_size
        self.name = name
        self.ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        self.read_chunk_size = read_chunk_size
        self.location = location or describe_client(client)
        self._find_missing_script = client.register_script(_FIND_MISSING_LUA)
        self._get_and_refresh_script = client.register_script(_GET_AND_REFRESH_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "reapi:",
        max_value_size: int = 64 << 20,
        name: str = "redis",
        ttl_seconds: float | None = None,
        retries: int = 2,
    ) -> RedisStore:
        """A store with its own connection pool; nothing connects until first use.

        Retries are few and short: a client of this server retries UNAVAILABLE itself,
        and a stalled call holds a build's worker slot.
        """
        client = aioredis.Redis.from_url(
            url, retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries)
        )
        return cls(client, key_prefix, max_value_size, name, ttl_seconds, location=redacted_url(url))

    def key(self, digest: Digest) -> str:
        return self.key_prefix + digest.key

    @contextmanager
    def _redis_errors(self, doing: str) -> Iterator[None]:
        """Turn redis-py exceptions into the error family, naming the server (no password)."""
        where = f"{self.name}: redis at {self.location}"
        try:
            yield
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise Unavailable(f"{where} is unreachable while {doing}: {exc}") from exc
        except redis_errors.ReadOnlyError as exc:
            raise Unavailable(f"{where} is read-only (a replica?) while {doing}: {exc}") from exc
        except redis_errors.OutOfMemoryError as exc:
            raise ResourceExhausted(f"{where} is out of memory while {doing}: {exc}") from exc
        except redis_errors.ResponseError as exc:
            raise Internal(f"{where} refused a command while {doing}: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise Unavailable(f"{where} failed while {doing}: {exc}") from exc

    # -- existence -----------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        unique = list(dict.fromkeys(digests))
        if not unique:
            return set()
        batches = [unique[i : i + FIND_MISSING_BATCH] for i in range(0, len(unique), FIND_MISSING_BATCH)]
        with self._redis_errors(f"checking {len(unique)} digests"):
            replies = await asyncio.gather(
                *(self._find_missing_script(keys=[self.key(d) for d in batch], args=[self.ttl_ms]) for batch in batches)
            )
        return {batch[i - 1] for batch, positions in zip(batches, replies) for i in positions}

    async def has(self, digest: Digest) -> bool:
        with self._redis_errors(f"checking {digest}"):
            return bool(await self._refresh(self.client, self.key(digest)))

    def _refresh(self, client: aioredis.Redis, key: str):  # type: ignore[no-untyped-def]
        """PEXPIRE or TOUCH ``key``; the reply (1 or 0) says whether it exists."""
        return client.pexpire(key, self.ttl_ms) if self.ttl_ms else client.touch(key)

    # -- reads ---------------------------------------------------------------------

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        # Reject negative offsets and limits before Redis reads them as "from the end".
        check_read_range(digest, max(offset, 0), offset, limit)
        key = self.key(digest)
        first_end = offset + min(self.read_chunk_size, limit or self.read_chunk_size)
        with self._redis_errors(f"reading {digest}"):
            pipe = self.client.pipeline(transaction=True)
            self._refresh(pipe, key)
            pipe.strlen(key)
            pipe.getrange(key, offset, first_end - 1)
            found, size, first = await pipe.execute()
        if not found:
            raise NotFound(f"{digest} not found in {self.name}")
        end = check_read_range(digest, size, offset, limit)
        first = first[: end - offset]
        if first:
            yield first
        position = offset + len(first)
        while position < end:
            stop = min(end, position + self.read_chunk_size)
            with self._redis_errors(f"reading {digest} at offset {position}"):
                pipe = self.client.pipeline(transaction=True)
                pipe.strlen(key)
                pipe.getrange(key, position, stop - 1)
                current_size, chunk = await pipe.execute()
            if current_size != size or len(chunk) != stop - position:
                # Values under one key never change in a CAS; an AC value may be
                # replaced, or any value expire or be evicted, while a reader streams.
                if current_size == 0:
                    raise NotFound(f"{digest} was evicted from {self.name} during the read, at offset {position}")
                raise Aborted(f"{digest} changed in {self.name} during the read, at offset {position}; retry")
            yield chunk
            position = stop

    async def _get(self, digest: Digest) -> bytes | None:
        with self._redis_errors(f"reading {digest}"):
            key = self.key(digest)
            if self.ttl_ms:
                return await self.client.getex(key, px=self.ttl_ms)  # type: ignore[no-any-return]
            return await self.client.get(key)  # type: ignore[no-any-return]

    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        value = await self._get(digest)
        if value is None:
            raise NotFound(f"{digest} not found in {self.name}")
        if max_size is not None and len(value) > max_size:
            raise ResourceExhausted(f"value of {digest} is {len(value)} bytes, over the {max_size}-byte limit")
        return value

    async def get_or_none(self, digest: Digest) -> bytes | None:
        return await self._get(digest)

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
        await self.put_bytes(digest, b"".join(parts))

    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        if len(data) > self.max_value_size:
            raise self._too_large(digest, str(len(data)))
        with self._redis_errors(f"writing {digest}"):
            await self.client.set(self.key(digest), data, px=self.ttl_ms or None)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures: dict[Digest, ReapiError] = {}
        sent: list[Digest] = []
        pipe = self.client.pipeline(transaction=False)
        for digest, data in blobs.items():
            if len(data) > self.max_value_size:
                failures[digest] = self._too_large(digest, str(len(data)))
                continue
            pipe.set(self.key(digest), data, px=self.ttl_ms or None)
            sent.append(digest)
        if not sent:
            return failures
        with self._redis_errors(f"writing {len(sent)} values"):
            replies = await pipe.execute(raise_on_error=False)
        for digest, reply in zip(sent, replies):
            if isinstance(reply, Exception):
                try:
                    with self._redis_errors(f"writing {digest}"):
                        raise reply
                except ReapiError as err:
                    failures[digest] = err
        return failures

    async def aclose(self) -> None:
        await self.client.aclose()
