"""Chunks read straight into fresh ``bytes`` behind their frames (cas/localfs/framed_reads.py),
and DiskStore's framed reads built on them: the bytes are exactly the ByteStream
answers the message class would serialize, and a failing read fails clearly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.disk.store import DiskStore
from cas.errors import Internal
from cas.localfs import framed_reads
from cas.localfs.files import CorruptValue
from cas.localfs.framed_reads import open_framed, read_framed_range
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.encoded_responses import read_response_header
from tests.cas.disk_support import MiB, blob, open_store
from tests.cas.streams import chunks_of
from tests.support.read_faults import fail_second_preadv

CHUNK = 64 << 10


@contextmanager
def value_file(tmp_path: Path, data: bytes) -> Iterator[int]:
    """A descriptor open on a file holding ``data``, closed after the block."""
    path = tmp_path / "value"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [1, 127, 128, CHUNK - 1, CHUNK, 3 * CHUNK + 17])
def test_framed_chunks_are_the_message_class_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size + 100)
    with value_file(tmp_path, data) as fd:
        framed = read_framed_range(fd, 100, size, CHUNK, read_response_header)
    expected = [data[100 + at : 100 + min(size, at + CHUNK)] for at in range(0, size, CHUNK)]
    assert [length for _, length in framed] == list(map(len, expected))
    for (whole, _), chunk in zip(framed, expected):
        assert type(whole) is bytes
        assert whole == bs_pb2.ReadResponse(data=chunk).SerializeToString()
        assert bs_pb2.ReadResponse.FromString(whole).data == chunk


def test_each_chunk_is_a_bytes_of_its_own(tmp_path: Path) -> None:
    """Fresh objects, never shared with each other or with the file: what was read
    stays as it was when the file changes, and equal reads are equal, distinct objects."""
    data = os.urandom(2 * CHUNK)
    with value_file(tmp_path, data) as fd:
        first = read_framed_range(fd, 0, 2 * CHUNK, CHUNK, read_response_header)
        second = read_framed_range(fd, 0, 2 * CHUNK, CHUNK, read_response_header)
    (tmp_path / "value").write_bytes(bytes(2 * CHUNK))
    assert first == second
    assert all(a is not b for (a, _), (b, _) in zip(first, second))
    header = read_response_header(CHUNK)
    assert b"".join(whole[len(header) :] for whole, _ in first) == data
    assert hash(first[0][0]) == hash(second[0][0])  # hashable and stable, as bytes are


def test_short_reads_are_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * CHUNK)
    real_preadv = os.preadv

    def dribble(fd: int, buffers: list[memoryview], offset: int) -> int:
        return real_preadv(fd, [buffers[0][:1000]], offset)  # 1000 bytes a call at most

    monkeypatch.setattr(framed_reads.os, "preadv", dribble)
    with value_file(tmp_path, data) as fd:
        framed = read_framed_range(fd, 5, 3 * CHUNK - 5, CHUNK, read_response_header)
    assert [bs_pb2.ReadResponse.FromString(whole).data for whole, _ in framed] == [
        data[5 : 5 + CHUNK], data[5 + CHUNK : 5 + 2 * CHUNK], data[5 + 2 * CHUNK :]
    ]


def test_a_file_shorter_than_its_range_is_corrupt(tmp_path: Path) -> None:
    with value_file(tmp_path, os.urandom(CHUNK)) as fd, pytest.raises(CorruptValue, match="ended after"):
        read_framed_range(fd, 0, 2 * CHUNK, CHUNK, read_response_header)


def test_open_framed_checks_the_size_and_closes_what_it_does_not_keep(tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 10)
    (tmp_path / "value").write_bytes(data)
    fd, framed = open_framed(str(tmp_path / "value"), len(data), 0, CHUNK, False, CHUNK, read_response_header)
    assert fd == -1 and [length for _, length in framed] == [CHUNK]
    with pytest.raises(CorruptValue):
        open_framed(str(tmp_path / "value"), len(data) + 1, 0, CHUNK, True, CHUNK, read_response_header)
    with pytest.raises(FileNotFoundError):
        open_framed(str(tmp_path / "gone"), 1, 0, 1, True, CHUNK, read_response_header)


def test_no_empty_bytes_is_ever_made_to_fill() -> None:
    """CPython shares its one empty ``bytes``: filling it would change b"" everywhere."""
    with pytest.raises(ValueError):
        framed_reads._fresh_bytes(0)


SIZE = 5 * MiB + 4321  # several hops of framed chunks, the last one partial


@asynccontextmanager
async def store_holding(tmp_path: Path, seed: int) -> AsyncIterator[tuple[DiskStore, Digest, bytes]]:
    """A disk store holding one ``SIZE`` blob, closed after the block."""
    store = await open_store(tmp_path / "store", max_bytes=256 * MiB)
    try:
        digest, data = blob(seed, SIZE)
        await store.write(digest, chunks_of(data, MiB))
        yield store, digest, data
    finally:
        await store.aclose()


async def test_a_read_error_midway_is_internal_and_the_store_reads_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with store_holding(tmp_path, 51) as (store, digest, data):
        fail_second_preadv(monkeypatch)
        got = []
        with pytest.raises(Internal, match="cannot read .*Input/output error"):
            async for whole, size in store.read_framed(digest, read_response_header):
                got.append(bs_pb2.ReadResponse.FromString(whole).data)
        assert data.startswith(b"".join(got))
        assert len(got) < SIZE // MiB
        framed = [bs_pb2.ReadResponse.FromString(whole).data async for whole, _ in store.read_framed(digest, read_response_header)]
        assert b"".join(framed) == data


async def test_a_value_truncated_during_a_framed_read_is_internal(tmp_path: Path) -> None:
    async with store_holding(tmp_path, 52) as (store, digest, data):
        reader = store.read_framed(digest, read_response_header)
        got = [bs_pb2.ReadResponse.FromString((await anext(reader))[0]).data]
        os.truncate(store.path_of(digest) or "", 3 * MiB)  # beyond what was read so far and read ahead
        with pytest.raises(Internal, match="changed size while being read"):
            async for whole, _ in reader:
                got.append(bs_pb2.ReadResponse.FromString(whole).data)
        assert data.startswith(b"".join(got))


async def test_a_framed_read_stopped_early_leaves_no_descriptor_open(tmp_path: Path) -> None:
    async with store_holding(tmp_path, 53) as (store, digest, data):
        before = len(os.listdir("/proc/self/fd"))
        reader = store.read_framed(digest, read_response_header)
        await anext(reader)
        await reader.aclose()  # type: ignore[attr-defined]
        await store.drain()
        assert len(os.listdir("/proc/self/fd")) == before
