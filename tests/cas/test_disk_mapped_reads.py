"""DiskStore's streamed reads: read ahead a chunk at a time (the default), or through
mapped windows with ``mapped_reads`` (cas/localfs/files.py map_range)."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from cas.disk.store import MAP_WINDOW
from cas.errors import Internal
from cas.localfs import files as disk_files
from tests.cas.disk_support import MiB, blob, open_store
from tests.cas.streams import chunks_of, read_all, read_chunks

SIZE = 2 * MAP_WINDOW + 3 * MiB + 4321  # three windows after the first chunk, the last one partial


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
async def test_reads_across_windows_at_any_offset_and_limit(tmp_path: Path, mapped: bool) -> None:
    store = await open_store(tmp_path / "store", max_bytes=256 * MiB, mapped_reads=mapped)
    try:
        digest, data = blob(41, SIZE)
        await store.write(digest, chunks_of(data, MiB))
        chunks = await read_chunks(store, digest)
        assert b"".join(chunks) == data
        assert max(map(len, chunks)) <= store.chunk_size
        for offset, limit in (
            (0, 1), (1, MAP_WINDOW), (MiB - 1, MAP_WINDOW + 2), (MAP_WINDOW + MiB - 5, 10),
            (4097, 0), (SIZE - 3, 0), (2 * MAP_WINDOW, MAP_WINDOW), (SIZE, 0),
        ):
            expected = data[offset : offset + limit] if limit else data[offset:]
            assert await read_all(store, digest, offset, limit) == expected, (offset, limit)
    finally:
        await store.aclose()


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
async def test_a_value_truncated_during_a_read_is_internal_not_a_crash(tmp_path: Path, mapped: bool) -> None:
    store = await open_store(tmp_path / "store", max_bytes=256 * MiB, mapped_reads=mapped)
    try:
        digest, data = blob(42, SIZE)
        await store.write(digest, chunks_of(data, MiB))
        reader = store.read(digest)
        first = await reader.__anext__()
        # Cut short beyond the windows mapped so far (the first two): the third finds it short.
        os.truncate(store.path_of(digest) or "", 2 * MAP_WINDOW + 2 * MiB)
        got = [first]
        with pytest.raises(Internal, match="changed size while being read"):
            async for chunk in reader:
                got.append(chunk)
        assert data.startswith(b"".join(got))
    finally:
        await store.aclose()


async def test_where_mapping_fails_the_range_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(disk_files.mmap, "mmap", refuse)
    store = await open_store(tmp_path / "store", max_bytes=256 * MiB, mapped_reads=True)
    try:
        digest, data = blob(43, MAP_WINDOW + 3 * MiB)
        await store.write(digest, chunks_of(data, MiB))
        assert await read_all(store, digest) == data
        assert await read_all(store, digest, MiB + 7, MAP_WINDOW) == data[MiB + 7 : MiB + 7 + MAP_WINDOW]
    finally:
        await store.aclose()


async def test_by_default_nothing_is_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk's read error in a mapped page is a SIGBUS for the whole process: maps are opt-in."""
    maps: list[object] = []

    def record(*args: object, **kwargs: object) -> mmap.mmap:
        maps.append(args)
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(disk_files.mmap, "mmap", record)
    store = await open_store(tmp_path / "store", max_bytes=256 * MiB)
    try:
        digest, data = blob(44, MAP_WINDOW + 3 * MiB)
        await store.write(digest, chunks_of(data, MiB))
        assert await read_all(store, digest) == data
        assert maps == []
    finally:
        await store.aclose()
