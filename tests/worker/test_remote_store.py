"""RemoteStore against a real reapi server: batches, ByteStream, errors, digest functions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc
import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound
from cas.memory import MemoryStore
from cas.remote.store import RemoteStore, fetch_max_batch_bytes
from cas.resource_names import download_name, upload_name
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.app import ReapiServer
from tests.support.servers import channel_to, config_for, running_server

BLAKE3 = re_pb2.DigestFunction.BLAKE3


def blobs(count: int, size: int, function: int = re_pb2.DigestFunction.SHA256) -> dict[Digest, bytes]:
    out = {}
    for _ in range(count):
        data = os.urandom(size)
        out[Digest.of(data, function)] = data
    return out


def test_resource_names() -> None:
    sha = Digest.of(b"x")
    b3 = Digest.of(b"x", BLAKE3)
    assert download_name("", sha) == f"blobs/{sha.hash}/1"
    assert download_name("a/b", b3) == f"a/b/blobs/blake3/{b3.hash}/1"
    assert upload_name("i", "u", sha) == f"i/uploads/u/blobs/{sha.hash}/1"
    assert upload_name("", "u", sha, "meta/x") == f"uploads/u/blobs/{sha.hash}/1/meta/x"


async def test_small_and_large_blobs_round_trip(cas_channel: grpc.aio.Channel, server_cas: MemoryStore) -> None:
    store = RemoteStore(cas_channel, "some/instance", max_batch_bytes=64 << 10)
    values = {**blobs(300, 100), **blobs(3, 200 << 10), **blobs(1, 3 << 20)}
    assert await store.find_missing(list(values)) == set(values)
    assert await store.put_many(values) == {}
    assert await server_cas.get_many(values) == values  # really stored on the server
    assert await store.find_missing(list(values)) == set()
    assert await store.get_many(list(values)) == values
    big = max(values, key=lambda d: d.size_bytes)
    assert await store.get_bytes(big) == values[big]
    assert b"".join([c async for c in store.read(big, offset=10, limit=100)]) == values[big][10:110]


async def test_blake3_uses_its_function_everywhere(cas_channel: grpc.aio.Channel, server_cas: MemoryStore) -> None:
    store = RemoteStore(cas_channel, "", max_batch_bytes=64 << 10)
    values = {**blobs(5, 50, BLAKE3), **blobs(1, 100 << 10, BLAKE3)}
    assert await store.put_many(values) == {}
    assert await store.find_missing(list(values)) == set()
    assert await store.get_many(list(values)) == values
    # The same bytes under SHA-256 are a different blob.
    some = next(iter(values.values()))
    assert await store.find_missing([Digest.of(some)]) == {Digest.of(some)}


async def test_absent_blobs_are_left_out_or_not_found(cas_channel: grpc.aio.Channel) -> None:
    store = RemoteStore(cas_channel, "", max_batch_bytes=64 << 10)
    small, large = Digest.of(b"never stored"), Digest.of(os.urandom(100 << 10))
    assert await store.get_many([small, large]) == {}
    with pytest.raises(NotFound):
        await store.get_bytes(small)
    with pytest.raises(NotFound, match="ByteStream.Read"):
        await store.get_bytes(large)
    assert await store.get_many([Digest.empty()]) == {Digest.empty(): b""}


async def test_wrong_content_is_refused_per_blob(cas_channel: grpc.aio.Channel, server_cas: MemoryStore) -> None:
    store = RemoteStore(cas_channel, "", max_batch_bytes=64 << 10)
    good = Digest.of(b"good")
    lie, big_lie = Digest.of(b"claimed"), Digest.of(os.urandom(100 << 10))
    failures = await store.put_many({good: b"good", lie: b"actual", big_lie: os.urandom(100 << 10)})
    assert set(failures) == {lie, big_lie}
    assert all(isinstance(err, InvalidArgument) for err in failures.values())
    assert await server_cas.has(good) and not await server_cas.has(lie) and not await server_cas.has(big_lie)


async def test_a_failing_source_stream_commits_nothing(cas_channel: grpc.aio.Channel, server_cas: MemoryStore) -> None:
    data = os.urandom(3 << 20)
    digest = Digest.of(data)

    async def broken() -> AsyncIterator[bytes]:
        yield data[: 1 << 20]
        raise OSError("disk went away")

    store = RemoteStore(cas_channel, "")
    with pytest.raises(OSError, match="disk went away"):
        await store.write(digest, broken())
    assert not await server_cas.has(digest)


async def test_writing_an_existing_blob_succeeds(cas_channel: grpc.aio.Channel) -> None:
    store = RemoteStore(cas_channel, "", max_batch_bytes=64 << 10)
    data = os.urandom(5 << 20)
    digest = Digest.of(data)
    await store.put_bytes(digest, data)
    await store.put_bytes(digest, data)  # the server may finish early; that is success
    assert await store.get_bytes(digest) == data


async def test_the_batch_limit_comes_from_the_server(cas_channel: grpc.aio.Channel) -> None:
    assert await fetch_max_batch_bytes(cas_channel, "") == 4 << 20


async def test_input_trees_come_with_one_get_tree(cas_channel: grpc.aio.Channel) -> None:
    from tests.worker.trees import put_tree
    from worker.directories import DirectoryCache

    store = RemoteStore(cas_channel, "")
    deep: dict = {"leaf.txt": b"leaf"}
    for level in range(6):
        deep = {f"level{level}": deep, f"file{level}": f"{level}".encode(), f"side{level}": {"x": f"side {level}".encode()}}
    root = await put_tree(store, deep)
    cache = DirectoryCache()
    tree = await cache.tree(root, store)
    assert len(tree) == 13
    assert cache.prefetched == 13 and cache.fetched == 0  # no batch read per level

    # Past the first page, the rest is read by digest, level by level.
    small_pages = DirectoryCache(tree_page_size=5)
    assert await small_pages.tree(root, store) == tree
    assert small_pages.prefetched == 5 and small_pages.fetched == 8


async def test_a_server_can_front_another_servers_cas_with_a_grpc_store(
    cas_server: ReapiServer, server_cas: MemoryStore
) -> None:
    """[stores.up] type = "grpc": server B keeps its CAS in server A."""
    stores = {
        "up": {"type": "grpc", "address": f"grpc://{cas_server.address}", "instance_name": "inner"},
        "cas": {"type": "verify", "inner": "up"},
        "ac": {"type": "memory", "max_size": "1MiB"},
    }
    async with running_server(config_for(stores=stores)) as front, channel_to(front) as channel:
        client = RemoteStore(channel, "outer", max_batch_bytes=64 << 10)
        values = {**blobs(20, 100), **blobs(1, 200 << 10)}
        assert await client.put_many(values) == {}
        assert await server_cas.get_many(values) == values  # stored in server A
        assert await client.get_many(list(values)) == values
        bad = Digest.of(b"claimed")
        failures = await client.put_many({bad: b"other bytes"})
        assert isinstance(failures[bad], InvalidArgument) and not await server_cas.has(bad)


async def test_grpc_store_config_mistakes() -> None:
    from cas.config import ConfigError, build_stores

    with pytest.raises(ConfigError, match="address"):
        await build_stores({"up": {"type": "grpc"}})
    with pytest.raises(ConfigError, match="grpc://HOST:PORT"):
        await build_stores({"up": {"type": "grpc", "address": "http://x:1"}})
