"""The worker's cache summary (a filter of its newest cache files) and its load, as sent to the server."""

from __future__ import annotations

import re
from pathlib import Path

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from cas.memory import MemoryStore
from worker.cache_summary import CacheSummary, current_load, load_text
from worker.file_cache import FileCache


async def fill(files: FileCache, store: MemoryStore, count: int, tag: str) -> list[Digest]:
    blobs = {Digest.of(f"{tag} {i}".encode()): f"{tag} {i}".encode() for i in range(count)}
    await store.put_many(blobs)
    await files.ensure({(d, False) for d in blobs}, store)
    return list(blobs)


async def test_the_summary_holds_the_newest_files_and_forgets_old_ones(tmp_path: Path) -> None:
    store = MemoryStore(max_bytes=1 << 30)
    files = await FileCache.open(tmp_path / "cache", 1 << 30)
    summary = CacheSummary(files, 130)  # 128 bytes of bits: room for 128 entries
    assert summary.capacity == 128
    before = summary.version
    first = await fill(files, store, 40, "first")
    assert summary.version != before
    held = DigestFilter.from_bytes(summary.wire())
    assert len(summary.wire()) <= 130
    assert all(d.hash in held for d in first)
    # Many newer files later, the filter was made again from the newest: the first ones left it.
    await fill(files, store, 300, "newer")
    held = DigestFilter.from_bytes(summary.wire())
    assert all(digest.hash in held for digest, _ in files.newest(64))
    assert sum(d.hash in held for d in first) < 20


def test_the_load_is_two_shares() -> None:
    cpu, memory = current_load()
    assert 0 <= cpu <= 1 and 0 <= memory <= 1
    assert re.fullmatch(r"cpu=\d\.\d{3} memory=\d\.\d{3}", load_text())
