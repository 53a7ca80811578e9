"""The memory store keeps a value streamed in large immutable chunks as those chunks, and reads out views."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence

from cas.digest import Digest
from cas.memory import KEEP_PIECES_FROM, MemoryStore, Pieces
from tests.cas.streams import read_all, read_chunks

PIECE = KEEP_PIECES_FROM + 1000


async def stream(parts: Sequence[bytes | memoryview | bytearray]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part  # type: ignore[misc]


def received(data: bytes, size: int) -> list[memoryview]:
    """``data`` as views of separate messages, each with a few header bytes (as gRPC hands them over)."""
    return [memoryview(b"hdr" + data[at : at + size])[3:] for at in range(0, len(data), size)]


async def test_large_views_of_bytes_are_kept_as_pieces_and_read_across_them() -> None:
    data = os.urandom(3 * PIECE + 17)
    digest = Digest.of(data)
    store = MemoryStore(1 << 30, chunk_size=100_000)
    await store.write(digest, stream(received(data, PIECE)))
    assert isinstance(store._values.peek(digest), Pieces)
    assert store.total_bytes == len(data)
    assert await read_all(store, digest) == data
    for offset, limit in ((0, 1), (PIECE - 3, 10), (PIECE, PIECE), (5, 2 * PIECE + 9), (3 * PIECE, 0), (len(data), 0)):
        expected = data[offset : offset + limit] if limit else data[offset:]
        assert await read_all(store, digest, offset, limit) == expected
    chunks = await read_chunks(store, digest)
    assert max(map(len, chunks)) <= 100_000
    assert all(isinstance(chunk, memoryview) for chunk in chunks)  # views, not copies
    whole = (await store.get_many([digest]))[digest]
    assert type(whole) is bytes and whole == data
    assert await store.get_bytes(digest) == data


async def test_small_or_writable_chunks_are_joined() -> None:
    store = MemoryStore(1 << 30)
    data = os.urandom(4 * PIECE)
    small = Digest.of(data)
    await store.write(small, stream(received(data, KEEP_PIECES_FROM // 2)))
    assert type(store._values.peek(small)) is bytes
    assert await read_all(store, small) == data

    # A writable buffer could change after the write: its bytes are copied.
    buffers = [bytearray(data[at : at + PIECE]) for at in range(0, len(data), PIECE)]
    digest = Digest.of(data)
    store._values.pop(digest)
    await store.write(digest, stream([memoryview(b) for b in buffers]))
    buffers[0][:10] = b"\x00" * 10
    assert type(store._values.peek(digest)) is bytes
    assert await read_all(store, digest) == data


async def test_pieces_count_toward_the_capacity_and_are_evicted() -> None:
    data = os.urandom(2 * PIECE)
    store = MemoryStore(3 * PIECE)
    first, second = Digest.of(data), Digest.of(data[::-1])
    await store.write(first, stream(received(data, PIECE)))
    await store.write(second, stream(received(data[::-1], PIECE)))
    assert await store.find_missing([first, second]) == {first}
    assert store.total_bytes == 2 * PIECE
