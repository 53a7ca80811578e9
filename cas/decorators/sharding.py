"""ShardingStore: each digest lives on one of several stores, chosen by rendezvous hashing.

The shards are usually ``grpc`` stores pointing at storage nodes (reapi servers
with a storage-only config), so a CAS can hold more, and serve more bytes per
second, than one machine. Every server that names the same shards with the same
weights routes every digest alike, with no coordination (cas/decorators/rendezvous.py).

- Each call for a digest reaches exactly its shard; a batch is split per shard and
  the parts run concurrently, so each shard still sees one batch.
- Adding a shard moves only the share it now owns (those blobs read as missing
  until clients upload them again, which REv2 clients do); removing one moves only
  its own share. Weights set the shares (2 takes twice as many as 1).
- A failing shard fails only the calls that need it: its error (UNAVAILABLE when it
  is down) names the shard, while digests on the other shards are served. A batch
  write reports the failure per digest; a batch read or an existence check that
  includes the shard's digests raises it (the CAS service then answers a batch read
  per blob, server/blob_batches.py).

Values are routed by the digest's hash alone, so the store suits the action cache
as well as the CAS. Sharding is not replication: a dead shard's blobs are out of
reach until it returns. Put ``mirrored`` pairs under it for that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from cas.decorators.rendezvous import Rendezvous
from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound, OutOfRange, ReapiError
from cas.store import BlobStore, closing

T = TypeVar("T")
R = TypeVar("R")


class Shard(NamedTuple):
    store: BlobStore
    weight: float = 1.0


def blame(err: ReapiError, store: BlobStore, parent: str, role: str = "shard") -> ReapiError:
    """``err`` naming the child it came from. Answers (absent, out of range, a bad
    request) pass unchanged: they are not the child's failure."""
    if isinstance(err, (NotFound, OutOfRange, InvalidArgument)):
        return err
    return err.with_context(f"{role} {store.name!r} of {parent!r}")


class ShardingStore(BlobStore):
    """Digests spread over ``shards`` by weighted rendezvous hashing of their hash."""

    def __init__(self, shards: Sequence[Shard], name: str = "sharding") -> None:
        self.shards = list(shards)
        self.name = name
        self._ring = Rendezvous([(shard.store.name, shard.weight) for shard in self.shards])

    def shard_for(self, digest: Digest) -> BlobStore:
        return self.shards[self._ring.owner(digest.hash)].store

    def _group(self, digests: Iterable[Digest]) -> dict[int, list[Digest]]:
        owner = self._ring.owner
        groups: dict[int, list[Digest]] = {}
        for digest in digests:
            groups.setdefault(owner(digest.hash), []).append(digest)
        return groups

    def _blame(self, err: ReapiError, store: BlobStore) -> ReapiError:
        return blame(err, store, self.name)

    async def _per_shard(
        self, groups: Mapping[int, T], call: Callable[[BlobStore, T], Awaitable[R]]
    ) -> list[tuple[int, R | ReapiError]]:
        """``call`` on each shard's part, concurrently; each result or blamed error, by shard."""

        async def one(index: int, part: T) -> R | ReapiError:
            store = self.shards[index].store
            try:
                return await call(store, part)
            except ReapiError as err:
                return self._blame(err, store)

        if len(groups) == 1:  # the usual small request: no tasks to make
            (index, part), = groups.items()
            return [(index, await one(index, part))]
        results = await asyncio.gather(*(one(index, part) for index, part in groups.items()))
        return list(zip(groups, results))

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        missing: set[Digest] = set()
        for _, result in await self._per_shard(self._group(digests), lambda store, part: store.find_missing(part)):
            if isinstance(result, ReapiError):
                raise result
            missing |= result
        return missing

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        store = self.shard_for(digest)
        try:
            async with closing(store.read(digest, offset, limit)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except ReapiError as err:
            raise self._blame(err, store) from None

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        store = self.shard_for(digest)
        try:
            await store.write(digest, chunks)
        except ReapiError as err:
            raise self._blame(err, store) from None

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        found: dict[Digest, bytes] = {}
        for _, result in await self._per_shard(self._group(digests), lambda store, part: store.get_many(part)):
            if isinstance(result, ReapiError):
                raise result
            found.update(result)
        return found

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        parts: dict[int, dict[Digest, bytes]] = {}
        owner = self._ring.owner
        for digest, value in blobs.items():
            parts.setdefault(owner(digest.hash), {})[digest] = value
        failures: dict[Digest, ReapiError] = {}
        for index, result in await self._per_shard(parts, lambda store, part: store.put_many(part)):
            store = self.shards[index].store
            if isinstance(result, ReapiError):
                failures.update(dict.fromkeys(parts[index], result))
            else:
                failures.update((digest, self._blame(err, store)) for digest, err in result.items())
        return failures

    async def aclose(self) -> None:
        """Children may be shared; whoever built them closes them (cas.config.close_stores)."""
