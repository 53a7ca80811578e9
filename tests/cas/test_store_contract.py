"""The BlobStore contract, run against every store and the common compositions.

Each parameter builds a real store: Redis against a real redis-server (each test
with its own key prefix), disk in a temporary directory, compositions through
``build_stores`` from the same specs a TOML file would hold. A store passes only if
it behaves exactly like the others: a composition may change where bytes live,
never what a caller sees.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from cas.config import build_stores, close_stores
from cas.digest import BLAKE3, Digest
from cas.errors import InvalidArgument, NotFound, OutOfRange, ResourceExhausted
from cas.store import READ_CHUNK_SIZE, BlobStore
from tests.cas.streams import StreamBroke, blob, chunks_of, read_all, read_chunks
from tests.support.storage_nodes import running_storage_nodes


@dataclass
class StoreUnderTest:
    store: BlobStore
    # A content-addressed store (verify) rejects values that do not match their digest.
    content_addressed: bool = False
    # A remote CAS may end an upload of a digest it holds without reading it (REv2
    # allows it), so a wrong value for a held digest is dropped instead of refused.
    skips_held_uploads: bool = False


@dataclass
class Env:
    tmp_path: Path
    request: pytest.FixtureRequest
    # grpc:// addresses of in-process storage nodes (verified memory CASes), for the
    # parameters in STORAGE_NODES.
    nodes: list[str] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        # Started only for the parameters that use Redis (session-scoped fixture).
        return str(self.request.getfixturevalue("redis_url"))

    @property
    def key_prefix(self) -> str:
        return f"contract:{uuid.uuid4().hex}:"


def _redis(env: Env) -> dict[str, Any]:
    return {"type": "redis", "url": env.redis_url, "key_prefix": env.key_prefix}


def _disk(env: Env, name: str) -> dict[str, Any]:
    return {"type": "disk", "path": str(env.tmp_path / name), "max_size": "1GiB"}


def _memory() -> dict[str, Any]:
    return {"type": "memory", "max_size": "256MiB"}


def _node(env: Env, index: int) -> dict[str, Any]:
    return {"type": "grpc", "address": env.nodes[index]}


def _packed(env: Env, name: str, **options: str) -> dict[str, Any]:
    # The contract streams values of a few MiB; the packed store's default limit is 1 MiB.
    return {"type": "packed", "path": str(env.tmp_path / name), "max_size": "1GiB", "max_value_size": "8MiB", **options}


# Each entry: the specs to build and the name of the store under test.
SPECS: dict[str, Callable[[Env], dict[str, dict[str, Any]]]] = {
    "memory": lambda env: {"top": {"type": "memory", "max_size": "256MiB"}},
    "disk": lambda env: {"top": _disk(env, "disk")},
    "disk(mapped reads)": lambda env: {"top": {**_disk(env, "disk"), "mapped_reads": True}},
    "packed": lambda env: {"top": _packed(env, "packed")},
    # Segments barely larger than the biggest value: most writes start a new segment.
    "packed(small segments)": lambda env: {
        "top": _packed(env, "packed", max_value_size="4MiB", segment_size="4100KiB", max_size="64MiB")
    },
    # The zero-config CAS shape (server/config.py default_stores).
    "verify(size_partition(small=packed,large=disk))": lambda env: {
        "small": _packed(env, "small"),
        "large": _disk(env, "large"),
        "split": {"type": "size_partition", "small": "small", "large": "large", "threshold": "64KiB"},
        "top": {"type": "verify", "inner": "split"},
    },
    "redis": lambda env: {"top": _redis(env)},
    "verify(memory)": lambda env: {
        "mem": {"type": "memory", "max_size": "256MiB"},
        "top": {"type": "verify", "inner": "mem"},
    },
    "size_partition(small=redis,large=disk)": lambda env: {
        "small": _redis(env),
        "large": _disk(env, "large"),
        "top": {"type": "size_partition", "small": "small", "large": "large", "threshold": "1KiB"},
    },
    "read_cache(fast=memory,slow=disk)": lambda env: {
        "fast": {"type": "memory", "max_size": "256MiB"},
        "slow": _disk(env, "slow"),
        "top": {"type": "read_cache", "fast": "fast", "slow": "slow"},
    },
    "redis(ttl)": lambda env: {"top": {**_redis(env), "ttl": "3h"}},
    # A realistic tiered CAS: every layer at once.
    "verify(read_cache(fast=memory,slow=size_partition(redis,disk)),write_to_fast)": lambda env: {
        "small": _redis(env),
        "large": _disk(env, "large"),
        "tiered": {"type": "size_partition", "small": "small", "large": "large", "threshold": "1KiB"},
        "hot": {"type": "memory", "max_size": "256MiB"},
        "cached": {"type": "read_cache", "fast": "hot", "slow": "tiered", "write_to_fast": True},
        "top": {"type": "verify", "inner": "cached"},
    },
    "sharding(memory,memory,memory)": lambda env: {
        "m1": _memory(), "m2": _memory(), "m3": _memory(),
        "top": {"type": "sharding", "shards": [{"store": "m1"}, {"store": "m2", "weight": 2}, {"store": "m3"}]},
    },
    "mirrored(memory,disk)": lambda env: {
        "a": _memory(), "b": _disk(env, "b"),
        "top": {"type": "mirrored", "a": "a", "b": "b"},
    },
    # An action cache shape: results mirrored over two Redis keyspaces.
    "mirrored(redis,redis)": lambda env: {
        "a": _redis(env), "b": _redis(env),
        "top": {"type": "mirrored", "a": "a", "b": "b"},
    },
    # The replicated deployment's CAS shapes, over storage nodes (which verify).
    "sharding(grpc,grpc)": lambda env: {
        "n1": _node(env, 0), "n2": _node(env, 1),
        "top": {"type": "sharding", "shards": [{"store": "n1"}, {"store": "n2"}]},
    },
    "mirrored(grpc,grpc)": lambda env: {
        "n1": _node(env, 0), "n2": _node(env, 1),
        "top": {"type": "mirrored", "a": "n1", "b": "n2"},
    },
    "sharding(mirrored(grpc,grpc),mirrored(memory,memory))": lambda env: {
        "n1": _node(env, 0), "n2": _node(env, 1), "m1": _memory(), "m2": _memory(),
        "pair1": {"type": "mirrored", "a": "n1", "b": "n2"},
        "pair2": {"type": "mirrored", "a": "m1", "b": "m2"},
        "both": {"type": "sharding", "shards": [{"store": "pair1"}, {"store": "pair2"}]},
        "top": {"type": "verify", "inner": "both"},
    },
}
# Storage nodes each parameter needs (started in-process before its stores are built).
STORAGE_NODES = {"sharding(grpc,grpc)": 2, "mirrored(grpc,grpc)": 2,
                 "sharding(mirrored(grpc,grpc),mirrored(memory,memory))": 2}
# Unverified grpc stores on top: the node behind answers a held digest's upload at once.
SKIPS_HELD_UPLOADS = {"sharding(grpc,grpc)", "mirrored(grpc,grpc)"}
CONTENT_ADDRESSED = {
    "verify(memory)", "verify(size_partition(small=packed,large=disk))",
    "verify(read_cache(fast=memory,slow=size_partition(redis,disk)),write_to_fast)",
    *STORAGE_NODES,
}


@pytest.fixture(params=list(SPECS))
async def sut(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with running_storage_nodes(STORAGE_NODES.get(request.param, 0)) as nodes:
        stores = await build_stores(SPECS[request.param](Env(tmp_path, request, nodes)))
        try:
            yield StoreUnderTest(stores["top"], content_addressed=request.param in CONTENT_ADDRESSED,
                                 skips_held_uploads=request.param in SKIPS_HELD_UPLOADS)
        finally:
            await close_stores(stores)


@pytest.fixture
def store(sut: StoreUnderTest) -> BlobStore:
    return sut.store


async def put(store: BlobStore, seed: int, size: int) -> tuple[Digest, bytes]:
    digest, data = blob(seed, size)
    await store.put_bytes(digest, data)
    return digest, data


# -- find_missing and has --------------------------------------------------------


async def test_find_missing_reports_only_absent_digests(store: BlobStore) -> None:
    a, _ = await put(store, 1, 100)
    b, _ = await put(store, 2, 5000)
    absent_small, _ = blob(3, 10)
    absent_large, _ = blob(4, 70_000)
    missing = await store.find_missing([a, absent_small, b, absent_large, absent_small, a])
    assert missing == {absent_small, absent_large}


async def test_find_missing_of_nothing_is_empty(store: BlobStore) -> None:
    assert await store.find_missing([]) == set()


async def test_digest_functions_are_kept_apart(store: BlobStore) -> None:
    data = b"same bytes, two hash functions"
    as_blake3 = Digest.of(data, BLAKE3.function)
    await store.put_bytes(as_blake3, data)
    same_hash_as_sha256 = Digest(as_blake3.hash, as_blake3.size_bytes)
    assert await store.find_missing([as_blake3, same_hash_as_sha256]) == {same_hash_as_sha256}
    assert await read_all(store, as_blake3) == data


async def test_has(store: BlobStore) -> None:
    present, _ = await put(store, 5, 300)
    absent, _ = blob(6, 300)
    assert await store.has(present) is True
    assert await store.has(absent) is False


# -- reads -------------------------------------------------------------------------


async def test_read_whole_offset_and_limit(store: BlobStore) -> None:
    digest, data = await put(store, 7, 10_000)
    assert await read_all(store, digest) == data
    assert await read_all(store, digest, offset=1234) == data[1234:]
    assert await read_all(store, digest, limit=100) == data[:100]
    assert await read_all(store, digest, offset=9_990, limit=100) == data[9_990:]
    assert await read_all(store, digest, offset=50, limit=0) == data[50:], "limit 0 means to the end"


async def test_read_at_the_end_is_empty(store: BlobStore) -> None:
    digest, data = await put(store, 8, 2000)
    assert await read_all(store, digest, offset=len(data)) == b""


async def test_read_past_the_end_is_out_of_range(store: BlobStore) -> None:
    digest, data = await put(store, 9, 2000)
    with pytest.raises(OutOfRange, match="past the end"):
        await read_chunks(store, digest, offset=len(data) + 1)


async def test_read_negative_offset_is_out_of_range(store: BlobStore) -> None:
    digest, _ = await put(store, 10, 2000)
    with pytest.raises(OutOfRange, match="negative"):
        await read_chunks(store, digest, offset=-1)


async def test_read_of_absent_value_is_not_found(store: BlobStore) -> None:
    digest, _ = blob(11, 2000)
    with pytest.raises(NotFound, match=digest.hash):
        await read_chunks(store, digest)


async def test_large_value_streams_in_bounded_chunks(store: BlobStore) -> None:
    digest, data = blob(12, 3 * READ_CHUNK_SIZE + 123)
    await store.write(digest, chunks_of(data, 64 << 10))
    chunks = await read_chunks(store, digest)
    assert b"".join(chunks) == data
    assert len(chunks) >= 4
    assert max(len(c) for c in chunks) <= READ_CHUNK_SIZE
    offset, limit = READ_CHUNK_SIZE - 10, 2 * READ_CHUNK_SIZE
    assert await read_all(store, digest, offset, limit) == data[offset : offset + limit]


# -- writes --------------------------------------------------------------------------


def _frame(size: int) -> bytes:
    """A frame that names its chunk's size, so a chunk behind the wrong frame shows."""
    return b"<" + str(size).encode() + b">"


async def test_framed_reads_are_the_read_chunks_behind_their_frames(store: BlobStore) -> None:
    """``read_framed`` (cas/store.py) hands out what ``read`` does, each chunk as one
    ``bytes`` behind its frame, whether the store joins them or reads into them."""
    digest, data = await put(store, 71, 2 * READ_CHUNK_SIZE + 12_345)
    for offset, limit in ((0, None), (1234, 100), (READ_CHUNK_SIZE - 3, READ_CHUNK_SIZE + 7), (len(data), None)):
        chunks = await read_chunks(store, digest, offset, limit)
        framed = [item async for item in store.read_framed(digest, _frame, offset, limit)]
        assert all(type(whole) is bytes for whole, _ in framed)
        assert framed == [(_frame(len(chunk)) + bytes(chunk), len(chunk)) for chunk in chunks], (offset, limit)
    empty = Digest.of(b"")  # held by content-addressed stores only
    try:
        expected = [(_frame(len(chunk)) + bytes(chunk), len(chunk)) for chunk in await read_chunks(store, empty)]
    except NotFound:
        with pytest.raises(NotFound):
            await anext(aiter(store.read_framed(empty, _frame)))
    else:
        assert [item async for item in store.read_framed(empty, _frame)] == expected


async def test_framed_reads_fail_as_reads_do(store: BlobStore) -> None:
    digest, data = await put(store, 72, 5000)
    absent, _ = blob(73, 5000)
    with pytest.raises(NotFound):
        await anext(aiter(store.read_framed(absent, _frame)))
    with pytest.raises(OutOfRange):
        await anext(aiter(store.read_framed(digest, _frame, len(data) + 1)))
    with pytest.raises(OutOfRange):
        await anext(aiter(store.read_framed(digest, _frame, -1)))


async def test_write_in_chunks_then_read(store: BlobStore) -> None:
    digest, data = blob(13, 200_000)
    await store.write(digest, chunks_of(data, 7_000))
    assert await read_all(store, digest) == data
    assert await store.find_missing([digest]) == set()


async def test_write_of_memoryview_chunks(store: BlobStore) -> None:
    """A ByteStream upload reaches the store as views of the received messages (server/write_requests.py)."""
    digest, data = blob(23, 2 * READ_CHUNK_SIZE + 4321)
    held = memoryview(bytes(data))

    async def views() -> AsyncIterator[memoryview]:
        for start in range(0, len(held), 300_000):
            yield held[start : start + 300_000]

    await store.write(digest, cast(AsyncIterator[bytes], views()))  # typed bytes; views are allowed (cas/store.py)
    assert await read_all(store, digest) == data
    assert await store.get_bytes(digest) == data


async def test_empty_value(store: BlobStore) -> None:
    digest = Digest.empty()
    await store.write(digest, chunks_of(b""))
    assert await store.has(digest)
    assert await read_all(store, digest) == b""
    assert await store.get_bytes(digest) == b""


async def test_rewriting_the_same_content_is_harmless(store: BlobStore) -> None:
    digest, data = await put(store, 14, 5000)
    await store.write(digest, chunks_of(data, 1000))
    await store.put_bytes(digest, data)
    assert await read_all(store, digest) == data


async def test_overwrite(sut: StoreUnderTest) -> None:
    """Action-cache style stores replace a value; a CAS refuses content that is not the digest's."""
    store = sut.store
    digest, old = await put(store, 15, 3000)
    new = bytes(reversed(old))
    if sut.skips_held_uploads:
        await store.write(digest, chunks_of(new, 1000))
        assert await read_all(store, digest) == old
    elif sut.content_addressed:
        with pytest.raises(InvalidArgument, match="does not match"):
            await store.write(digest, chunks_of(new, 1000))
        assert await read_all(store, digest) == old
    else:
        await store.write(digest, chunks_of(new, 1000))
        assert await read_all(store, digest) == new


async def test_value_need_not_match_its_digest_outside_a_cas(sut: StoreUnderTest) -> None:
    """The action cache stores a serialized ActionResult under an action's digest."""
    action_digest, _ = blob(16, 142)
    result = b"an ActionResult, longer than the action it answers" * 10
    if sut.content_addressed:
        with pytest.raises(InvalidArgument):
            await sut.store.put_bytes(action_digest, result)
        assert await sut.store.find_missing([action_digest]) == {action_digest}
    else:
        await sut.store.put_bytes(action_digest, result)
        assert await sut.store.get_bytes(action_digest) == result


async def test_broken_write_leaves_no_trace(store: BlobStore) -> None:
    digest, data = blob(17, 300_000)
    with pytest.raises(StreamBroke):
        await store.write(digest, chunks_of(data, 64 << 10, fail_after=2))
    assert await store.find_missing([digest]) == {digest}
    with pytest.raises(NotFound):
        await read_chunks(store, digest)
    # The same digest can still be written afterwards.
    await store.write(digest, chunks_of(data, 64 << 10))
    assert await read_all(store, digest) == data


async def test_broken_write_raising_at_the_end_leaves_no_trace(store: BlobStore) -> None:
    digest, data = blob(18, 700)
    with pytest.raises(StreamBroke, match="at the end"):  # after all 7 chunks went by
        await store.write(digest, chunks_of(data, 100, fail_after=7))
    assert await store.find_missing([digest]) == {digest}


async def test_broken_overwrite_keeps_the_old_value(store: BlobStore) -> None:
    digest, data = await put(store, 19, 200_000)
    with pytest.raises(StreamBroke):
        await store.write(digest, chunks_of(data, 64 << 10, fail_after=1))
    assert await read_all(store, digest) == data


async def test_concurrent_writers_of_the_same_value(store: BlobStore) -> None:
    digest, data = blob(20, 150_000)
    await asyncio.gather(*(store.write(digest, chunks_of(data, 10_000, pause=True)) for _ in range(6)))
    assert await read_all(store, digest) == data


async def test_a_failing_writer_does_not_spoil_a_concurrent_one(store: BlobStore) -> None:
    digest, data = blob(21, 150_000)
    good = store.write(digest, chunks_of(data, 10_000, pause=True))
    bad = store.write(digest, chunks_of(data, 10_000, pause=True, fail_after=5))
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], StreamBroke)
    assert results[1] is None
    assert await read_all(store, digest) == data


# -- in-memory shortcuts ---------------------------------------------------------------


async def test_get_bytes_and_its_size_limit(store: BlobStore) -> None:
    digest, data = await put(store, 22, 4000)
    assert await store.get_bytes(digest) == data
    assert await store.get_bytes(digest, max_size=4000) == data
    with pytest.raises(ResourceExhausted, match="4000"):
        await store.get_bytes(digest, max_size=3999)
    absent, _ = blob(23, 4000)
    with pytest.raises(NotFound):
        await store.get_bytes(absent)
    assert await store.get_or_none(absent) is None
    assert await store.get_or_none(digest) == data


async def test_put_many_then_get_many(store: BlobStore) -> None:
    values = dict(blob(seed, size) for seed, size in [(24, 10), (25, 1000), (26, 4096), (27, 100_000)])
    assert await store.put_many(values) == {}
    absent = [blob(28, 10)[0], blob(29, 50_000)[0]]
    wanted = [*values, *absent, next(iter(values))]
    assert await store.get_many(wanted) == values
    assert await store.find_missing(wanted) == set(absent)


async def test_get_many_and_put_many_of_nothing(store: BlobStore) -> None:
    assert await store.get_many([]) == {}
    assert await store.put_many({}) == {}


async def test_put_many_stores_the_rest_when_one_fails(sut: StoreUnderTest) -> None:
    """Only a CAS can reject a value by its content; the others accept any value."""
    good_digest, good = blob(30, 500)
    bad_digest, _ = blob(31, 500)
    failures = await sut.store.put_many({good_digest: good, bad_digest: b"not the content"})
    if sut.content_addressed:
        assert set(failures) == {bad_digest}
        assert isinstance(failures[bad_digest], InvalidArgument)
    else:
        assert failures == {}
    assert await sut.store.get_bytes(good_digest) == good


async def test_writes_through_shortcuts_and_streams_agree(store: BlobStore) -> None:
    """A value put in memory reads back as a stream, and a streamed one via get_bytes."""
    put_digest, put_data = await put(store, 32, 3000)
    streamed_digest, streamed_data = blob(33, 3000)
    await store.write(streamed_digest, chunks_of(streamed_data, 512))
    assert await read_all(store, put_digest) == put_data
    assert await store.get_bytes(streamed_digest) == streamed_data
    assert await store.get_many([put_digest, streamed_digest]) == {put_digest: put_data, streamed_digest: streamed_data}

