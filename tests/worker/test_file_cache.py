"""The worker's local CAS cache: verified fetches, deduplication, LRU eviction, restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Collection, Iterable
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import Internal, MissingBlobs
from cas.memory import MemoryStore
from cas.store import ForwardingStore
from worker.file_cache import SMALL_BLOB, FileCache


class CountingStore(ForwardingStore):
    """A real MemoryStore that counts the calls made to it (and can corrupt or slow reads)."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.get_many_calls: list[list[Digest]] = []
        self.reads: list[Digest] = []
        self.corrupt = False
        self.gate: asyncio.Event | None = None

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        digests = list(digests)
        self.get_many_calls.append(digests)
        if self.gate is not None:
            await self.gate.wait()
        found = await self.inner.get_many(digests)
        return {d: (b"X" + v[1:] if self.corrupt and v else v) for d, v in found.items()}

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        self.reads.append(digest)
        async for chunk in self.inner.read(digest, offset, limit):
            yield chunk

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return await self.inner.find_missing(digests)


def cached(cache: FileCache, digest: Digest, executable: bool) -> Path:
    return Path(cache.path_of(digest, executable))


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(MemoryStore(max_bytes=1 << 30))


async def put(store: CountingStore, *values: bytes) -> list[Digest]:
    digests = [Digest.of(v) for v in values]
    await store.inner.put_many(dict(zip(digests, values)))
    return digests


async def test_small_blobs_come_in_one_batch_and_are_verified_files(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, *(f"blob {i}".encode() for i in range(100)))
    cache = await FileCache.open(tmp_path, 1 << 30)
    await cache.ensure({(d, False) for d in digests}, store)
    assert len(store.get_many_calls) == 1
    for i, digest in enumerate(digests):
        path = cached(cache, digest, False)
        assert path.read_bytes() == f"blob {i}".encode()
        assert os.stat(path).st_mode & 0o777 == 0o444


async def test_large_blobs_are_streamed(store: CountingStore, tmp_path: Path) -> None:
    big = os.urandom(SMALL_BLOB + 12345)
    [digest] = await put(store, big)
    cache = await FileCache.open(tmp_path, 1 << 30)
    await cache.ensure({(digest, True)}, store)
    assert store.reads == [digest] and store.get_many_calls == []
    assert cached(cache, digest, True).read_bytes() == big
    assert os.stat(cached(cache, digest, True)).st_mode & 0o777 == 0o555


async def test_corrupt_content_never_enters_the_cache(store: CountingStore, tmp_path: Path) -> None:
    [digest] = await put(store, b"the real content")
    store.corrupt = True
    cache = await FileCache.open(tmp_path, 1 << 30)
    with pytest.raises(Internal, match="corrupt"):
        await cache.ensure({(digest, False)}, store)
    assert (digest, False) not in cache
    assert not cached(cache, digest, False).exists()
    store.corrupt = False
    await cache.ensure({(digest, False)}, store)
    assert cached(cache, digest, False).read_bytes() == b"the real content"


async def test_missing_blobs_are_reported_together(store: CountingStore, tmp_path: Path) -> None:
    [present] = await put(store, b"here")
    absent = [Digest.of(b"gone 1"), Digest.of(os.urandom(SMALL_BLOB + 1))]
    cache = await FileCache.open(tmp_path, 1 << 30)
    with pytest.raises(MissingBlobs) as caught:
        await cache.ensure({(present, False), *((d, False) for d in absent)}, store)
    assert set(caught.value.digests) == set(absent)
    assert (present, False) in cache  # what arrived is kept


async def test_concurrent_leases_fetch_a_blob_once(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, b"shared one", b"shared two")
    cache = await FileCache.open(tmp_path, 1 << 30)
    store.gate = asyncio.Event()
    first = asyncio.create_task(cache.ensure({(digests[0], False), (digests[1], False)}, store))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.ensure({(digests[0], True)}, store))  # other mode: a local copy
    await asyncio.sleep(0.01)
    store.gate.set()
    await asyncio.gather(first, second)
    assert len(store.get_many_calls) == 1
    assert cached(cache, digests[0], True).read_bytes() == b"shared one"


async def test_lru_eviction_spares_pinned_and_recent_files(store: CountingStore, tmp_path: Path) -> None:
    values = [bytes([i]) * 100 for i in range(10)]
    digests = await put(store, *values)
    cache = await FileCache.open(tmp_path, 500)
    for digest in digests[:5]:
        async with cache.pinned({(digest, False)}, store):
            pass
    assert cache.total_bytes == 500
    async with cache.pinned({(digests[0], False)}, store):  # touch the oldest
        pass
    async with cache.pinned({(digests[5], False), (digests[6], False)}, store):
        # Pinned files stay even though the cache is over its cap inside the block.
        assert cached(cache, digests[5], False).exists()
    kept = {d for d in digests if (d, False) in cache}
    assert kept == {digests[0], digests[3], digests[4], digests[5], digests[6]}
    assert cache.total_bytes == 500
    assert not cached(cache, digests[1], False).exists()


async def test_a_restart_keeps_the_cache_and_drops_damaged_files(store: CountingStore, tmp_path: Path) -> None:
    digests = await put(store, b"one", b"two", b"three")
    cache = await FileCache.open(tmp_path, 1 << 30)
    await cache.ensure({(d, False) for d in digests} | {(digests[0], True)}, store)
    damaged = cached(cache, digests[1], False)
    os.chmod(damaged, 0o644)
    damaged.write_bytes(b"tw")  # truncated, as after a crash mid-write
    (tmp_path / "tmp" / "leftover").write_bytes(b"partial download")
    reopened = await FileCache.open(tmp_path, 1 << 30)
    assert {(digests[0], False), (digests[0], True), (digests[2], False)} == {k for k in [
        (digests[0], False), (digests[0], True), (digests[1], False), (digests[2], False)] if k in reopened}
    assert not damaged.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    calls = len(store.get_many_calls)
    await reopened.ensure({(digests[0], False), (digests[2], False)}, store)
    assert len(store.get_many_calls) == calls  # served from disk


async def test_after_an_unclean_stop_every_file_is_verified_before_its_first_use(
    store: CountingStore, tmp_path: Path
) -> None:
    digests = await put(store, b"one", b"two", b"three")
    keys = {(d, False) for d in digests}
    cache = await FileCache.open(tmp_path, 1 << 30)
    await cache.ensure(keys, store)
    # Changed behind the worker's back, same size and mode (as a root action could before).
    changed = cached(cache, digests[1], False)
    os.chmod(changed, 0o644)
    changed.write_bytes(b"TWO")
    os.chmod(changed, 0o444)
    # No close(): a crash. Every file is doubted; the changed one is fetched again.
    reopened = await FileCache.open(tmp_path, 1 << 30)
    calls = len(store.get_many_calls)
    await reopened.ensure(keys, store)
    assert (reopened.verified_blobs, reopened.rejected_blobs) == (3, 1)
    assert store.get_many_calls[calls:] == [[digests[1]]]
    assert changed.read_bytes() == b"two"
    await reopened.ensure(keys, store)
    assert reopened.verified_blobs == 3  # once each
    # After a clean stop the next start trusts its files.
    reopened.close()
    trusted = await FileCache.open(tmp_path, 1 << 30)
    await trusted.ensure(keys, store)
    assert trusted.verified_blobs == 0 and len(store.get_many_calls) == calls + 1


async def test_outputs_of_another_user_are_adopted_as_the_workers_own(store: CountingStore, tmp_path: Path) -> None:
    cache = await FileCache.open(tmp_path / "cache", 1 << 30)
    output = tmp_path / "out.o"
    output.write_bytes(b"object code of an action user")
    os.chown(output, 999, 999)
    os.chmod(output, 0o666)
    digest = Digest.of(b"object code of an action user")
    assert cache.adopt(output, digest, False)
    info = os.stat(cached(cache, digest, False))
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (os.geteuid(), os.getegid(), 0o444)


async def test_outputs_can_be_adopted_by_hardlink(store: CountingStore, tmp_path: Path) -> None:
    cache = await FileCache.open(tmp_path / "cache", 1 << 30)
    output = tmp_path / "out.o"
    output.write_bytes(b"object code")
    digest = Digest.of(b"object code")
    assert cache.adopt(output, digest, False)
    cache.note_adopted(digest, False)
    assert (digest, False) in cache
    assert os.stat(cached(cache, digest, False)).st_ino == os.stat(output).st_ino
    await cache.ensure({(digest, False)}, store)
    assert store.get_many_calls == []


async def test_a_stray_file_under_a_cache_name_is_replaced_not_rewritten(store: CountingStore, tmp_path: Path) -> None:
    [digest] = await put(store, b"the right content")
    cache = await FileCache.open(tmp_path, 1 << 30)
    stray = cached(cache, digest, False)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"stale bytes, maybe linked into a running exec root")
    linked = tmp_path / "exec-root-input"
    os.link(stray, linked)
    await cache.ensure({(digest, False)}, store)
    assert stray.read_bytes() == b"the right content"
    assert linked.read_bytes() == b"stale bytes, maybe linked into a running exec root"  # never written through


def _shm_is_another_filesystem() -> bool:
    shm = Path("/dev/shm")
    return shm.is_dir() and os.stat(shm).st_dev != os.stat(tempfile.gettempdir()).st_dev


@pytest.mark.skipif(not _shm_is_another_filesystem(), reason="needs /dev/shm on another filesystem than the temp dir")
async def test_inputs_are_copied_where_hardlinks_are_impossible(store: CountingStore, tmp_path: Path) -> None:
    from worker.directories import DirectoryCache
    from worker.input_root import InputRootBuilder
    from tests.worker.trees import Exe, put_tree

    cache_root = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        cache = await FileCache.open(cache_root, 1 << 30)
        root = await put_tree(store.inner, {"data": b"copied", "tool": Exe(b"#!/bin/sh\n")})
        await InputRootBuilder(cache, DirectoryCache()).build(root, tmp_path / "exec", store)
        assert (tmp_path / "exec" / "data").read_bytes() == b"copied"
        assert os.stat(tmp_path / "exec" / "tool").st_mode & 0o111
        assert os.stat(tmp_path / "exec" / "data").st_nlink == 1  # a copy, not a link
    finally:
        shutil.rmtree(cache_root)
