"""ShardingStore and its rendezvous hashing: shares by weight, minimal remapping, and
a failing shard failing only its own digests, by name."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping

import pytest

from cas.decorators.rendezvous import Rendezvous
from cas.decorators.sharding import Shard, ShardingStore
from cas.digest import Digest
from cas.errors import NotFound, ReapiError, Unavailable
from cas.memory import MemoryStore
from cas.store import BlobStore
from tests.cas.streams import blob, chunks_of, read_all, read_chunks

DIGESTS = [Digest.of(i.to_bytes(4, "big")) for i in range(20_000)]


def owners(ring: Rendezvous, names: list[str]) -> dict[Digest, str]:
    return {d: names[ring.owner(d.hash)] for d in DIGESTS}


def test_shares_follow_the_weights() -> None:
    ring = Rendezvous([("a", 1), ("b", 2), ("c", 1)])
    counts = Counter(owners(ring, ["a", "b", "c"]).values())
    assert 0.45 < counts["b"] / len(DIGESTS) < 0.55
    assert 0.20 < counts["a"] / len(DIGESTS) < 0.30
    assert 0.20 < counts["c"] / len(DIGESTS) < 0.30


def test_adding_a_shard_moves_only_what_it_takes() -> None:
    before = owners(Rendezvous([("a", 1), ("b", 1), ("c", 1)]), ["a", "b", "c"])
    after = owners(Rendezvous([("a", 1), ("b", 1), ("c", 1), ("d", 1)]), ["a", "b", "c", "d"])
    moved = [d for d in DIGESTS if before[d] != after[d]]
    assert all(after[d] == "d" for d in moved), "a digest moved between old shards"
    assert 0.20 < len(moved) / len(DIGESTS) < 0.30  # d's fair share: a quarter


def test_removing_a_shard_moves_only_its_own() -> None:
    before = owners(Rendezvous([("a", 1), ("b", 1), ("c", 1)]), ["a", "b", "c"])
    after = owners(Rendezvous([("a", 1), ("c", 1)]), ["a", "c"])
    for digest in DIGESTS:
        if before[digest] != "b":
            assert after[digest] == before[digest]


def test_order_in_the_config_does_not_matter() -> None:
    forward = owners(Rendezvous([("a", 1), ("b", 3)]), ["a", "b"])
    backward = owners(Rendezvous([("b", 3), ("a", 1)]), ["b", "a"])
    assert forward == backward


def test_bad_shard_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        Rendezvous([])
    with pytest.raises(ValueError, match="more than once"):
        Rendezvous([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="positive"):
        Rendezvous([("a", 0)])


class Down(BlobStore):
    """A shard whose node is gone: every call fails as a refused connection does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _gone(self) -> Unavailable:
        return Unavailable(f"{self.name}: failed to connect to all addresses")

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        raise self._gone()

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        raise self._gone()
        yield b""  # pragma: no cover - makes this an async generator

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        raise self._gone()

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        raise self._gone()

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        raise self._gone()


def sharded(*stores: BlobStore) -> ShardingStore:
    return ShardingStore([Shard(store) for store in stores], name="cas-shards")


async def test_each_digest_lands_on_its_shard_only() -> None:
    a, b = MemoryStore(1 << 20, name="a"), MemoryStore(1 << 20, name="b")
    store = sharded(a, b)
    values = dict(blob(seed, 100) for seed in range(40))
    assert await store.put_many(values) == {}
    for digest in values:
        owner, other = (a, b) if store.shard_for(digest) is a else (b, a)
        assert await owner.has(digest) and not await other.has(digest)
    assert len(a) + len(b) == 40 and len(a) > 5 and len(b) > 5
    assert await store.get_many(values) == values
    streamed, data = blob(99, 5000)
    await store.write(streamed, chunks_of(data, 1000))
    assert await store.shard_for(streamed).get_bytes(streamed) == data


async def test_a_dead_shard_fails_its_digests_only_and_is_named() -> None:
    live = MemoryStore(1 << 20, name="node-1")
    store = sharded(live, Down("node-2"))
    values = dict(blob(seed, 100) for seed in range(40))
    failures = await store.put_many(values)
    on_dead = {d for d in values if store.shard_for(d) is not live}
    assert set(failures) == on_dead and on_dead
    for err in failures.values():
        assert isinstance(err, Unavailable) and "shard 'node-2' of 'cas-shards'" in err.message
    on_live = [d for d in values if d not in on_dead]
    assert await store.get_many(on_live) == {d: values[d] for d in on_live}
    assert await store.find_missing(on_live) == set()
    assert await read_all(store, on_live[0]) == values[on_live[0]]
    dead_digest = next(iter(on_dead))
    for call in (store.find_missing([on_live[0], dead_digest]), store.get_many([on_live[0], dead_digest]),
                 read_chunks(store, dead_digest), store.write(dead_digest, chunks_of(values[dead_digest]))):
        with pytest.raises(Unavailable, match="shard 'node-2' of 'cas-shards'"):
            await call


async def test_absence_is_an_answer_not_a_shard_failure() -> None:
    store = sharded(MemoryStore(1 << 20, name="a"), MemoryStore(1 << 20, name="b"))
    digest, _ = blob(1, 10)
    with pytest.raises(NotFound) as caught:
        await read_chunks(store, digest)
    assert "shard" not in caught.value.message
