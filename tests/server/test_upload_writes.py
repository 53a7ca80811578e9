"""The ByteStream Write protocol of server/uploads.py, without gRPC: fast path, resumption, checks.

Messages here are plain values with a WriteRequest's four fields; tests/server/test_bytestream.py
drives the same protocol through the real service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import pytest

from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.errors import InvalidArgument
from cas.memory import MemoryStore
from server.uploads import UploadKey, UploadRegistry, WriteStatus

DATA = bytes(range(256)) * 400
DIGEST = Digest.of(DATA)
NAME = f"uploads/u/blobs/{DIGEST.hash}/{DIGEST.size_bytes}"
KEY = UploadKey("", "u", DIGEST)


@dataclass(frozen=True)
class Message:
    write_offset: int
    data: bytes = b""
    finish_write: bool = False
    resource_name: str = NAME


def messages(start: int, end: int, chunk: int = 10_000, finish: bool = True) -> list[Message]:
    """DATA[start:end] in ``chunk``-byte messages; the last one finishes when ``finish``."""
    out = [Message(offset, DATA[offset : min(offset + chunk, end)]) for offset in range(start, end, chunk)]
    if finish:
        out[-1] = Message(out[-1].write_offset, out[-1].data, True)
    return out


async def stream(items: Iterable[Message]) -> AsyncIterator[Message]:
    for item in items:
        yield item


async def write(registry: UploadRegistry, store: VerifyingStore, items: list[Message], key: UploadKey = KEY) -> int:
    return await registry.write(store, key, items[0], stream(items[1:]))


@pytest.fixture
async def registry() -> AsyncIterator[UploadRegistry]:
    uploads = UploadRegistry()
    yield uploads
    await uploads.aclose()


@pytest.fixture
def inner() -> MemoryStore:
    return MemoryStore(1 << 20)


@pytest.fixture
def store(inner: MemoryStore) -> VerifyingStore:
    return VerifyingStore(inner)


async def test_a_whole_blob_in_one_message_is_stored_without_an_upload(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore
) -> None:
    assert await write(registry, store, [Message(0, DATA, True)]) == DIGEST.size_bytes
    assert await inner.get_bytes(DIGEST) == DATA
    assert len(registry) == 0


async def test_a_one_message_blob_replaces_a_partial_upload(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore
) -> None:
    with pytest.raises(InvalidArgument, match="without finish_write"):
        await write(registry, store, messages(0, 20_000, finish=False))
    partial = registry.get(KEY)
    assert partial is not None and partial.received == 20_000
    assert await write(registry, store, [Message(0, DATA, True)]) == DIGEST.size_bytes
    await partial.wait_closed()
    assert not partial.alive and registry.get(KEY) is None
    assert await inner.get_bytes(DIGEST) == DATA


async def test_a_broken_off_write_resumes_where_status_says(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore
) -> None:
    assert await registry.status(store, KEY) == WriteStatus(0, complete=False)
    with pytest.raises(InvalidArgument, match="the upload is kept"):
        await write(registry, store, messages(0, 30_000, finish=False))
    assert await registry.status(store, KEY) == WriteStatus(30_000, complete=False)
    assert await write(registry, store, messages(30_000, len(DATA))) == DIGEST.size_bytes
    assert await registry.status(store, KEY) == WriteStatus(DIGEST.size_bytes, complete=True)
    assert await inner.get_bytes(DIGEST) == DATA
    assert len(registry) == 0


async def test_resuming_elsewhere_than_the_committed_offset_is_refused(
    registry: UploadRegistry, store: VerifyingStore
) -> None:
    with pytest.raises(InvalidArgument):
        await write(registry, store, messages(0, 30_000, finish=False))
    with pytest.raises(InvalidArgument, match="does not match the 30000 bytes committed so far"):
        await write(registry, store, messages(20_000, len(DATA)))
    upload = registry.get(KEY)
    assert upload is not None and upload.received == 30_000  # the refused call changed nothing


async def test_offset_zero_starts_the_upload_again(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore
) -> None:
    with pytest.raises(InvalidArgument):
        await write(registry, store, messages(0, 30_000, finish=False))
    earlier = registry.get(KEY)
    assert earlier is not None
    assert await write(registry, store, messages(0, len(DATA))) == DIGEST.size_bytes
    await earlier.wait_closed()
    assert not earlier.alive and await inner.get_bytes(DIGEST) == DATA


async def test_a_stored_blob_finishes_at_once_and_drops_a_partial_upload(
    registry: UploadRegistry, store: VerifyingStore
) -> None:
    with pytest.raises(InvalidArgument):
        await write(registry, store, messages(0, 30_000, finish=False))
    partial = registry.get(KEY)
    await store.put_bytes(DIGEST, DATA)
    # Any first message will do: the blob is there, so nothing is read or checked.
    assert await write(registry, store, [Message(12_345)]) == DIGEST.size_bytes
    assert partial is not None and registry.get(KEY) is None
    await partial.wait_closed()
    assert not partial.alive


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([Message(0, DATA[:10]), Message(10, DATA[10:], True, "uploads/other/blobs/x/1")], "resource_name changed"),
        ([Message(0, DATA[:10]), Message(20, DATA[20:], True)], "write_offset 20 does not follow the 10 bytes"),
        ([Message(0, DATA + b"x", True)], f"digest size {len(DATA)} does not match the data"),
        ([Message(0, DATA[:10]), Message(10, b"", True)], "finish_write after 10 bytes"),
    ],
    ids=["renamed", "gap", "too-long", "early-finish"],
)
async def test_an_inconsistent_stream_is_refused_naming_the_problem(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore, items: list[Message], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await write(registry, store, items)
    assert len(inner) == 0


async def test_data_that_does_not_match_its_digest_stores_nothing_either_way(
    registry: UploadRegistry, store: VerifyingStore, inner: MemoryStore
) -> None:
    wrong = UploadKey("", "u", Digest(Digest.of(b"x").hash, len(DATA)))
    with pytest.raises(InvalidArgument, match="does not match"):
        await write(registry, store, [Message(0, DATA, True)], wrong)  # one message
    with pytest.raises(InvalidArgument, match="does not match"):
        await write(registry, store, messages(0, len(DATA)), wrong)  # streamed
    assert len(inner) == 0 and len(registry) == 0


async def broken_off(registry: UploadRegistry, store: VerifyingStore, upload_id: str, received: int) -> UploadKey:
    """An upload that sent ``received`` bytes and broke off (it waits to be resumed)."""
    key = UploadKey("", upload_id, DIGEST)
    with pytest.raises(InvalidArgument, match="without finish_write"):
        await write(registry, store, messages(0, received, finish=False), key)
    return key


async def test_broken_off_uploads_are_held_within_a_byte_budget_oldest_dropped_first(store: VerifyingStore) -> None:
    registry = UploadRegistry(max_idle_bytes=50_000, memory_tight=lambda: False)
    try:
        keys = [await broken_off(registry, store, f"u{i}", 20_000) for i in range(4)]
        assert registry.idle_bytes <= 50_000
        assert [registry.get(key) is not None for key in keys] == [False, False, True, True]
        # A resumed upload is no longer idle; finished, it holds nothing.
        assert await write(registry, store, messages(20_000, len(DATA)), keys[3]) == DIGEST.size_bytes
        assert registry.idle_bytes == 20_000 and len(registry) == 1
    finally:
        await registry.aclose()


async def test_when_memory_is_tight_idle_uploads_go_sooner_and_the_budget_halves(store: VerifyingStore) -> None:
    now = [1000.0]
    tight = [False]
    registry = UploadRegistry(max_idle_bytes=50_000, memory_tight=lambda: tight[0], clock=lambda: now[0])
    try:
        first = await broken_off(registry, store, "a", 20_000)
        now[0] += 20  # within either idle timeout
        assert registry.expire_idle(force=True) == 0
        second = await broken_off(registry, store, "b", 20_000)
        tight[0] = True
        third = await broken_off(registry, store, "c", 5_000)  # over half the budget now: the oldest goes
        assert [registry.get(k) is not None for k in (first, second, third)] == [False, True, True]
        now[0] += 31  # idle past 30 s while memory is tight
        assert registry.expire_idle(force=True) == 2
        assert len(registry) == 0 and registry.idle_bytes == 0
    finally:
        await registry.aclose()


class FailingStore(VerifyingStore):
    """Its writes fail after the first chunk, as on a full disk."""

    async def write(self, digest: Digest, chunks: AsyncIterator[bytes]) -> None:  # type: ignore[override]
        async for _ in chunks:
            raise OSError(28, "No space left on device")


async def test_an_upload_whose_store_write_failed_is_dropped_at_once(inner: MemoryStore) -> None:
    registry = UploadRegistry()
    try:
        with pytest.raises(OSError, match="No space"):
            await write(registry, FailingStore(inner), messages(0, len(DATA), chunk=1000))
        assert len(registry) == 0 and registry.idle_bytes == 0
    finally:
        await registry.aclose()
