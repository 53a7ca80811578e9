"""Compressing and decompressing async chunk streams, the shape blobs move in.

Large chunks are (de)compressed in a worker thread (zstandard and zlib release the
GIL), so a 64 MiB transfer keeps the event loop answering other calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TypeVar

from cas.compression.codecs import Codec, Decoder

T = TypeVar("T")

# Chunks at least this large are worked on in a thread; smaller ones cost less than the hop.
THREADED_THRESHOLD = 128 << 10


async def _run(size: int, work: Callable[[], T]) -> T:
    if size >= THREADED_THRESHOLD:
        return await asyncio.to_thread(work)
    return work()


async def compressed(chunks: AsyncIterable[bytes], codec: Codec) -> AsyncIterator[bytes]:
    """``chunks`` compressed as one stream of ``codec``."""
    encoder = codec.encoder()
    async for chunk in chunks:
        out = await _run(len(chunk), lambda: encoder.compress(chunk))
        if out:
            yield out
    tail = encoder.flush()
    if tail:
        yield tail


async def decompressed(chunks: AsyncIterable[bytes], decoder: Decoder) -> AsyncIterator[bytes]:
    """The content of compressed ``chunks``; raises INVALID_ARGUMENT mid-stream when they
    are corrupt or decode past the decoder's limit, and at the end when cut short."""
    async for chunk in chunks:
        for piece in await _run(len(chunk), lambda: decoder.decompress(chunk)):
            yield piece
    decoder.finish()
