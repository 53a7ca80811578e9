"""The BlobStore seam: a decorator overrides only what it changes and no path bypasses it.

The shortcuts are built once on the primitives; in a ForwardingStore a batch twin
(get_many, put_many) goes through the subclass's own streaming method (read, write)
unless the subclass overrides the twin too. These tests hold that through every way
a server reaches a store: the shortcuts, the batches, ByteStream and the batch RPCs
of a real grpc.aio server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping

import pytest

from cas.digest import Digest
from cas.errors import NotFound, ReapiError, Unavailable
from cas.memory import MemoryStore
from cas.store import BlobStore, ForwardingStore, each
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.cas.streams import blob, chunks_of, read_all
from tests.server.client import StorageClient, memory_stores
from tests.support.servers import channel_to, config_for, running_server


class RecordsWrites(ForwardingStore):
    """Overrides ``write`` only, as a decorator that changes what is stored would."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.written: list[Digest] = []

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        self.written.append(digest)
        await self.inner.write(digest, chunks)


class RecordsReads(ForwardingStore):
    """Overrides ``read`` only."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.reads: list[Digest] = []

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        self.reads.append(digest)
        return self.inner.read(digest, offset, limit)


class CountsBatches(ForwardingStore):
    """Overrides ``write`` and its twin ``put_many``, counting the calls of each."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.streamed = 0
        self.batches: list[int] = []

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        self.streamed += 1
        await self.inner.write(digest, chunks)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        self.batches.append(len(blobs))
        return await self.inner.put_many(blobs)


class Minimal(BlobStore):
    """A store with the three abstract methods only; refuses values starting with b"!"."""

    def __init__(self) -> None:
        self.values: dict[Digest, bytes] = {}
        self.writing = 0
        self.most_writing = 0

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return {d for d in digests if d not in self.values}

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        if digest not in self.values:
            raise NotFound(f"{digest} not found")
        yield self.values[digest][offset:]

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        try:
            data = b"".join([chunk async for chunk in chunks])
            await asyncio.sleep(0)
            if data.startswith(b"!"):
                raise Unavailable(f"refusing {digest}")
            self.values[digest] = data
        finally:
            self.writing -= 1


async def test_a_decorator_overriding_only_write_sees_put_bytes_and_put_many() -> None:
    recorder = RecordsWrites(MemoryStore(1 << 20))
    one, one_data = blob(1, 100)
    many = dict(blob(seed, 1000) for seed in range(2, 6))
    await recorder.put_bytes(one, one_data)
    assert await recorder.put_many(many) == {}
    assert sorted(recorder.written) == sorted([one, *many])
    assert await recorder.get_many([one, *many]) == {one: one_data, **many}


async def test_a_decorator_overriding_only_write_sees_every_write_rpc() -> None:
    """ByteStream Write (one message, and streamed) and BatchUpdateBlobs all reach it."""
    async with running_server(config_for(stores=memory_stores())) as server:
        instance = server.instances.get("")
        recorder = RecordsWrites(instance.cas)
        instance.cas = recorder
        async with channel_to(server) as channel:
            client = StorageClient(channel)
            whole, whole_data = blob(10, 1000)
            streamed, streamed_data = blob(11, 300_000)
            batched = [await client.upload(blob(seed, 500)[1]) for seed in (12, 13)]
            await client.write(whole_data, chunk=len(whole_data))  # one message: the put_bytes path
            await client.write(streamed_data, chunk=64 << 10)  # several: a streamed upload
            assert sorted(recorder.written) == sorted([*batched, whole, streamed])
            assert await client.missing([*batched, whole, streamed]) == set()
            assert await client.read(streamed) == streamed_data


async def test_a_decorator_overriding_only_read_sees_every_read_path() -> None:
    async with running_server(config_for(stores=memory_stores())) as server:
        instance = server.instances.get("")
        recorder = RecordsReads(instance.cas)
        instance.cas = recorder
        async with channel_to(server) as channel:
            client = StorageClient(channel)
            digests = [await client.upload(blob(seed, 700)[1]) for seed in (20, 21, 22)]
            assert await client.read(digests[0]) == blob(20, 700)[1]
            response = await client.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[digests[1].to_proto()]))
            assert response.responses[0].data == blob(21, 700)[1]
            assert await recorder.get_bytes(digests[2]) == blob(22, 700)[1]
            assert await recorder.get_or_none(digests[2]) == blob(22, 700)[1]
            assert recorder.reads == [digests[0], digests[1], digests[2], digests[2]]


async def test_overriding_the_batch_twin_too_keeps_batches_whole() -> None:
    counter = CountsBatches(MemoryStore(1 << 20))
    many = dict(blob(seed, 100) for seed in range(30, 130))
    assert await counter.put_many(many) == {}
    single, single_data = blob(200, 10)
    await counter.put_bytes(single, single_data)
    streamed, streamed_data = blob(201, 10)
    await counter.write(streamed, chunks_of(streamed_data))
    assert counter.batches == [100, 1]
    assert counter.streamed == 1


def test_a_store_may_not_override_a_shortcut() -> None:
    with pytest.raises(TypeError, match="overrides get_or_none, has: the shortcuts are built once"):

        class Shortcutting(ForwardingStore):
            async def has(self, digest: Digest) -> bool:  # type: ignore[misc]  # refused at class creation
                return True

            async def get_or_none(self, digest: Digest) -> bytes | None:  # type: ignore[misc]  # refused at class creation
                return None


def test_the_twin_rule_is_decided_when_the_class_is_defined() -> None:
    assert RecordsWrites.put_many is BlobStore.put_many
    assert RecordsWrites.get_many is ForwardingStore.get_many
    assert RecordsReads.get_many is BlobStore.get_many
    assert RecordsReads.put_many is ForwardingStore.put_many
    assert CountsBatches.put_many is not BlobStore.put_many


def test_the_framed_read_is_a_twin_of_read() -> None:
    """A decorator overriding ``read`` alone gets ``read_framed`` through it (a ByteStream
    read then passes through its ``read``); one that leaves ``read`` alone forwards it."""
    assert RecordsReads.read_framed is BlobStore.read_framed
    assert RecordsWrites.read_framed is ForwardingStore.read_framed
    assert CountsBatches.read_framed is ForwardingStore.read_framed


async def test_a_store_of_three_methods_gets_working_batches() -> None:
    store = Minimal()
    good = dict(blob(seed, 50) for seed in range(40, 140))
    bad_digest, bad = Digest.of(b"!no"), b"!no"
    failures = await store.put_many({**good, bad_digest: bad})
    assert list(failures) == [bad_digest]
    assert isinstance(failures[bad_digest], Unavailable)
    assert 1 < store.most_writing <= 32  # concurrent, but bounded
    absent = blob(999, 5)[0]
    assert await store.get_many([*good, absent, next(iter(good))]) == good
    assert await store.get_or_none(absent) is None
    with pytest.raises(NotFound):
        await store.get_bytes(absent)
    assert await store.has(next(iter(good)))
    assert await read_all(store, next(iter(good))) == next(iter(good.values()))


async def test_each_keeps_order_and_cancels_the_rest_on_an_error() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def call(item: int) -> int:
        started.append(item)
        if item == 3:
            raise Unavailable("three")
        await asyncio.sleep(0.05)
        finished.append(item)
        return item * 2

    assert await each([1, 2, 4], call) == [2, 4, 8]
    finished.clear()
    with pytest.raises(Unavailable, match="three"):
        await each(list(range(10)), call, limit=4)
    assert finished == []  # the others were cancelled, not left running
    await asyncio.sleep(0.1)
    assert finished == []
