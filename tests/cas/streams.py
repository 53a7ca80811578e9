"""Chunk streams for store tests: well-behaved, slow and broken ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cas.digest import Digest
from cas.store import BlobStore


class StreamBroke(Exception):
    """Raised by a test's chunk stream midway, as a dropped upload would."""


async def chunks_of(
    data: bytes, size: int = 64 << 10, fail_after: int | None = None, pause: bool = False
) -> AsyncIterator[bytes]:
    """``data`` in ``size``-byte chunks; raise StreamBroke after ``fail_after`` chunks.

    ``pause`` yields to the event loop between chunks, so concurrent writers interleave.
    """
    for index, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and index == fail_after:
            raise StreamBroke(f"upload dropped after {index} chunks")
        if pause:
            await asyncio.sleep(0)
        yield data[start : start + size]
    if fail_after is not None:
        raise StreamBroke("upload dropped at the end")


async def read_chunks(store: BlobStore, digest: Digest, offset: int = 0, limit: int | None = None) -> list[bytes]:
    return [chunk async for chunk in store.read(digest, offset, limit)]


async def read_all(store: BlobStore, digest: Digest, offset: int = 0, limit: int | None = None) -> bytes:
    return b"".join(await read_chunks(store, digest, offset, limit))


def blob(seed: int, size: int) -> tuple[Digest, bytes]:
    """Deterministic content of ``size`` bytes and its SHA-256 digest."""
    pattern = seed.to_bytes(4, "big") + bytes(range(251))
    data = (pattern * (size // len(pattern) + 1))[:size]
    return Digest.of(data), data
