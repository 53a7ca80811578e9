"""PackedStore on real segment files: eviction with refresh, overwrites, group commit,
reads during eviction, limits and failed appends.

The behaviour every store shares is in test_store_contract.py; restarts, crashes and
damaged files are in test_packed_restart.py.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cas.config import ConfigError, build_stores
from cas.digest import Digest
from cas.errors import Internal, NotFound, ResourceExhausted, Unavailable
from cas.packed.store import PackedStore
from tests.cas.packed_support import SMALL, KiB, blob, blobs, open_store, present, segment_file
from tests.cas.streams import chunks_of, read_all


async def fill_until_evicted(store: PackedStore, segments: int = 1, start: int = 10_000) -> None:
    """Write new values until ``segments`` segments were evicted, then let the eviction finish."""
    while store.segments_evicted < segments:
        assert await store.put_many(blobs(start, 10)) == {}
        start += 10
    await store.drain()


# -- eviction ------------------------------------------------------------------------------


async def test_eviction_drops_the_oldest_segment_and_keeps_recently_used_values(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    try:
        await store.put_many(blobs(0, 120))
        first = store.segments[0]
        in_first = {d: v for d, v in blobs(0, 120).items() if d in set(first.keys)}
        used = dict(list(in_first.items())[:15])
        unused = {d: v for d, v in in_first.items() if d not in used}
        await store.put_many(blobs(500, 10))  # the first segment is sealed by now
        assert await store.find_missing(used) == set()  # a use after it was sealed

        await fill_until_evicted(store)
        assert first not in store.segments
        assert not segment_file(first).exists()
        assert store.refreshed == len(used)
        assert await present(store, used) == used
        assert await store.find_missing(unused) == set(unused)
        assert store.total_bytes <= store.max_bytes
    finally:
        await store.aclose()


async def test_refresh_copies_at_most_half_a_segment(tmp_path: Path) -> None:
    """When everything was used, eviction still frees space: the rest goes."""
    store = await open_store(tmp_path, **SMALL)
    try:
        values = blobs(0, 60)
        await store.put_many(values)
        first = store.segments[0]
        await store.put_many(blobs(500, 60))
        assert await store.find_missing(values) == set()  # every value used again

        await fill_until_evicted(store)
        kept = await present(store, values)
        assert 0 < len(kept) <= first.end // 2 // 1000
        assert store.total_bytes <= store.max_bytes
    finally:
        await store.aclose()


async def test_a_value_read_while_its_segment_is_evicted_reads_whole(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL, chunk_size=512)
    try:
        digest, data = blob(1, 4000)
        await store.put_bytes(digest, data)
        reading = store.read(digest)
        first_chunk = await anext(reading)
        segment = store.segments[0]

        await fill_until_evicted(store)
        assert not segment_file(segment).exists()
        rest = [chunk async for chunk in reading]
        assert first_chunk + b"".join(rest) == data
        with pytest.raises(NotFound):
            await read_all(store, digest)
    finally:
        await store.aclose()


async def test_many_evictions_keep_the_index_and_the_files_in_step(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    try:
        hot = blobs(0, 5)
        await store.put_many(hot)
        for round_ in range(20):
            await store.put_many(blobs(1000 + 40 * round_, 40))
            assert await store.find_missing(hot) == set()
        await store.drain()
        assert store.segments_evicted >= 5
        assert await present(store, hot) == hot, "values in constant use survive every eviction"
        on_disk = sorted(p.name for p in tmp_path.glob("*.seg"))
        assert on_disk == sorted(Path(s.path).name + ".seg" for s in store.segments)
        assert store.total_bytes <= store.max_bytes
    finally:
        await store.aclose()


# -- overwrites ----------------------------------------------------------------------------


async def test_concurrent_overwrites_keep_the_last_one_queued(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        key = Digest.of(b"an action")
        results = [f"result {i}".encode() * (i + 1) for i in range(20)]
        await asyncio.gather(*(store.put_bytes(key, result) for result in results))
        assert await store.get_bytes(key) == results[-1]
    finally:
        await store.aclose()


async def test_a_refresh_copy_never_lands_after_a_newer_value(tmp_path: Path) -> None:
    """Eviction plans to copy a used value forward, and the key is rewritten before the
    copy is written (here: in the same batch, ahead of it). The copy must be skipped, or
    a restart, which replays records in file order, would bring the old value back."""
    store = await open_store(tmp_path, **SMALL)
    key = Digest.of(b"an action")
    try:
        await store.put_bytes(key, b"old result")
        seed = 0
        while not (len(store.segments) == 4 and store.segments[-1].room < 1100):  # full, not yet over
            await store.put_bytes(*blob(seed))
            seed += 1
        assert await store.find_missing([key]) == set()  # used: a candidate for the copy
        crossing = store.put_bytes(*blob(seed, 4000))  # a fifth segment: over the cap once written
        overwrite = store.put_bytes(key, b"new result")  # queued while that write runs
        await asyncio.gather(crossing, overwrite)
        await store.drain()
        assert store.refreshed == 1, "the old value was planned for a copy"
        assert await store.get_bytes(key) == b"new result"
    finally:
        await store.aclose()
    store = await open_store(tmp_path, **SMALL)
    try:
        assert await store.get_bytes(key) == b"new result"
    finally:
        await store.aclose()


async def test_storing_an_identical_value_again_writes_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        values = blobs(0, 50)
        await store.put_many(values)
        total, batches = store.total_bytes, store.batches_written
        assert await store.put_many(values) == {}
        assert (store.total_bytes, store.batches_written) == (total, batches)
    finally:
        await store.aclose()


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_writers_share_batches(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        values = blobs(0, 300)
        await asyncio.gather(*(store.put_bytes(d, v) for d, v in values.items()))
        assert await present(store, values) == values
        assert store.batches_written < 30, "group commit: later writers join the next batch"
    finally:
        await store.aclose()


async def test_a_cancelled_writer_leaves_a_consistent_store(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        values = blobs(0, 200)
        task = asyncio.ensure_future(store.put_many(values))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.drain()
        await present(store, values)  # stored or not, never other bytes
        assert await store.put_many(values) == {}
        assert await present(store, values) == values
    finally:
        await store.aclose()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    digest, data = blob(1)
    await store.put_bytes(digest, data)
    await store.aclose()
    with pytest.raises(Unavailable, match="closed"):
        await store.put_bytes(*blob(2))
    with pytest.raises(Unavailable, match="closed"):
        await store.get_bytes(digest)
    await store.aclose()  # twice is harmless


# -- limits ----------------------------------------------------------------------------------


async def test_values_over_max_value_size_are_refused_naming_the_limit(tmp_path: Path) -> None:
    store = await open_store(tmp_path, **SMALL)
    try:
        big_digest, big = blob(1, 4 * KiB + 1)
        with pytest.raises(ResourceExhausted, match="max_value_size of 4096 bytes"):
            await store.put_bytes(big_digest, big)
        small = blobs(10, 3)
        failures = await store.put_many({**small, big_digest: big})
        assert set(failures) == {big_digest}
        assert await present(store, small) == small

        sent = []

        async def stream() -> Any:
            async for chunk in chunks_of(big * 4, 1000):
                sent.append(chunk)
                yield chunk

        with pytest.raises(ResourceExhausted, match="at least 5000 bytes"):
            await store.write(big_digest, stream())
        assert len(sent) == 5, "the stream is abandoned as soon as it passes the limit"
        assert await store.find_missing([big_digest]) == {big_digest}
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_size": "1MiB"}, r"store 'p': max_size 1048576 must hold at least two segments"),
        ({"max_value_size": "8MiB", "segment_size": "4MiB"}, r"store 'p': segment_size 4194304 cannot hold a value"),
        ({"segment_size": "2GiB", "max_size": "10GiB"}, r"store 'p': segment_size 2147483648 is over"),
        ({"max_size": "8TiB"}, r"store 'p': max_size 8796093022208 would take more than 4096 segments"),
        ({"max_value_size": "a lot"}, r"store 'p' key 'max_value_size': 'a lot' is not a size"),
        ({"fsync": "yes"}, r"store 'p' key 'fsync': expected true or false"),
        ({"compression": "zstd"}, r"store 'p' \(packed\): unknown key 'compression' \(known: path, max_size"),
    ],
)
async def test_config_errors_name_the_store_and_the_setting(tmp_path: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await build_stores({"p": {"type": "packed", "path": str(tmp_path / "p"), **options}})
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").glob("*.seg"))


async def test_config_builds_a_packed_store(tmp_path: Path) -> None:
    stores = await build_stores({"p": {"type": "packed", "path": str(tmp_path / "p"), "max_size": "64MiB", "fsync": True}})
    store = stores["p"]
    try:
        assert isinstance(store, PackedStore)
        assert (store.max_bytes, store.max_value_size, store.segment_size) == (64 << 20, 1 << 20, 4 << 20)
        values = blobs(0, 10)
        assert await store.put_many(values) == {}  # with fdatasync per batch
        assert await present(store, values) == values
    finally:
        await store.aclose()


# -- failed appends --------------------------------------------------------------------------


@pytest.fixture
def file_size_limit() -> Iterator[None]:
    """Files in this process may not grow past 1 MiB (writes fail with EFBIG) while in use."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


async def test_a_segment_that_cannot_be_created_fails_its_writers_cleanly(tmp_path: Path, file_size_limit: None) -> None:
    store = await open_store(tmp_path, max_bytes=64 << 20, segment_size=4 << 20)  # past the file size limit
    try:
        values = blobs(0, 10)
        failures = await store.put_many(values)
        assert set(failures) == set(values)
        assert all(isinstance(e, Internal) and "File too large" in e.message for e in failures.values())
        assert await store.find_missing(values) == set(values)
        assert not list(tmp_path.glob("*.seg")), "no half-made segment is left behind"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert await store.put_many(values) == {}, "it works again once the file can be made"
        await store.aclose()


async def test_a_failed_append_is_cut_back_and_writing_moves_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store(tmp_path)
    before = blobs(0, 20)
    await store.put_many(before)
    first = store.segments[0]
    size_before = first.end
    real_pwritev = os.pwritev

    def disk_full(fd: int, buffers: Any, offset: int) -> int:
        real_pwritev(fd, [b"\xee" * 100], offset)  # a partial write, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", disk_full)
    lost = blobs(100, 20)
    failures = await store.put_many(lost)
    assert set(failures) == set(lost)
    assert all(isinstance(e, ResourceExhausted) and "no space left" in e.message for e in failures.values())
    monkeypatch.setattr(os, "pwritev", real_pwritev)

    after = blobs(200, 20)
    try:
        assert await store.put_many(after) == {}
        assert store.segments[-1] is not first, "the segment that failed takes no more appends"
        await store.drain()
        assert os.path.getsize(segment_file(first)) == size_before, "the partial batch is cut off"
    finally:
        await store.aclose()
    store = await open_store(tmp_path)
    try:
        assert store.opened_with.scanned == 0
        assert await present(store, {**before, **lost, **after}) == {**before, **after}
    finally:
        await store.aclose()
