"""Helpers for the PackedStore tests: small stores, segment files, simulated crashes and damage."""

from __future__ import annotations

import os
from pathlib import Path

from cas.digest import Digest
from cas.packed.store import PackedStore
from cas.packed.format import BATCH_HEADER, RECORD_HEADER
from cas.packed.segments import INDEX_SUFFIX, SEGMENT_SUFFIX, Segment

KiB = 1 << 10

# Small enough that a few dozen 1 KiB values fill a segment and four segments fill the store.
SMALL = {"max_bytes": 256 * KiB, "segment_size": 64 * KiB, "max_value_size": 4 * KiB}


def blob(seed: int, size: int = 1000) -> tuple[Digest, bytes]:
    data = (f"value {seed} ".encode() * (size // 8 + 2))[:size]
    return Digest.of(data), data


def blobs(start: int, count: int, size: int = 1000) -> dict[Digest, bytes]:
    return dict(blob(seed, size) for seed in range(start, start + count))


async def open_store(root: Path, **options: object) -> PackedStore:
    settings = {"max_bytes": 64 << 20, **options}
    return await PackedStore.open(root, name="test", **settings)  # type: ignore[arg-type]


async def abandon(store: PackedStore) -> None:
    """Leave the directory as a killed process would: the data written so far is in the
    page cache, the segment being written was never sealed (no index file)."""
    await store.drain()
    store._writer.closed = True
    await store._lane.shutdown()
    for segment in store._index.segments:
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1
        segment.close_map()
    os.close(store._lock_fd)


def segment_file(segment: Segment) -> Path:
    return Path(segment.path + SEGMENT_SUFFIX)


def index_file(segment: Segment) -> Path:
    return Path(segment.path + INDEX_SUFFIX)


def batch_start(segment: Segment, first_key: Digest) -> int:
    """Where the batch whose first record is ``first_key``'s begins in the segment file."""
    value_at = segment.offsets[segment.keys.index(first_key)]
    return value_at - len(first_key.hash) // 2 - RECORD_HEADER.size - BATCH_HEADER.size


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


async def present(store: PackedStore, values: dict[Digest, bytes]) -> dict[Digest, bytes]:
    """The values the store holds, checked byte for byte against what was written."""
    found = await store.get_many(values)
    assert all(found[d] == values[d] for d in found), "a value came back with other bytes"
    return found
