"""DiskStore on the default disk and on /dev/shm (tmpfs), when it exists.

    .venv/bin/python -m tests.benchmarks.bench_disk_store [--blobs 100000] [--stream-mib 512] [--only disk|shm]

Rows, per location:
- index rebuild at open for ``--blobs`` values (default 100,000), after a clean
  close (from the snapshot) and after a crash (a full scan that stats every file),
  both with a warm page cache; a cold scan after a reboot also reads every inode;
- find_missing of 10,000 held digests (answered from memory);
- put_many of 1,000 x 1 KiB new blobs, and again with blobs already stored (the
  store compares and skips the write); get_many of the same 1,000;
- a streamed write and read of one ``--stream-mib`` MiB value (1 MiB chunks in,
  store-sized chunks out). Writes land in the page cache; the disk flushes later.
Each row is the median of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from cas.digest import Digest
from cas.disk.store import DiskStore
from cas.disk.snapshot import SNAPSHOT_FILE

REPEATS = 5
MiB = 1 << 20


async def median_seconds(call: Callable[[], Awaitable[object]], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kib_blobs(count: int, seed: str, size: int = 1024) -> dict[Digest, bytes]:
    out = {}
    for i in range(count):
        data = f"{seed}-{i}-".encode().ljust(size, b".")
        out[Digest.of(data)] = data
    return out


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def fill(store: DiskStore, count: int) -> None:
    for start in range(0, count, 1000):
        batch = kib_blobs(min(1000, count - start), f"fill-{start}", size=64)
        assert await store.put_many(batch) == {}


Row = tuple[str, str, float]  # operation, result, seconds


async def bench_location(root: Path, blob_count: int, stream_mib: int) -> list[Row]:
    rows: list[Row] = []
    store = await DiskStore.open(root, max_bytes=64 << 30, name="bench")
    start = time.perf_counter()
    await fill(store, blob_count)
    rows.append((f"create {blob_count:,} x 64 B (put_many)", f"{blob_count / (time.perf_counter() - start):,.0f} blobs/s", time.perf_counter() - start))
    await store.aclose()

    start = time.perf_counter()
    store = await DiskStore.open(root, max_bytes=64 << 30, name="bench")
    rebuild = time.perf_counter() - start
    assert len(store) == blob_count
    rows.append((f"reopen after clean close (snapshot)", f"{blob_count / rebuild:,.0f} blobs/s", rebuild))
    start = time.perf_counter()
    await store.aclose()
    rows.append(("close (writes the snapshot)", "", time.perf_counter() - start))
    (root / SNAPSHOT_FILE).unlink()  # as after a crash or reboot
    start = time.perf_counter()
    store = await DiskStore.open(root, max_bytes=64 << 30, name="bench")
    rebuild = time.perf_counter() - start
    assert len(store) == blob_count
    rows.append((f"reopen after a crash (full scan)", f"{blob_count / rebuild:,.0f} blobs/s", rebuild))
    try:
        held = list(store._index)[:10_000]
        seconds = await median_seconds(lambda: store.find_missing(held))
        rows.append(("find_missing 10,000 held", f"{len(held) / seconds:,.0f} digests/s", seconds))

        batches = iter([kib_blobs(1000, f"put-{i}") for i in range(REPEATS)])
        last: dict[Digest, bytes] = {}

        async def put_new() -> None:
            nonlocal last
            last = next(batches)
            assert await store.put_many(last) == {}

        seconds = await median_seconds(put_new)
        rows.append(("put_many 1,000 x 1 KiB, new", f"{1000 / seconds:,.0f} blobs/s", seconds))
        seconds = await median_seconds(lambda: store.put_many(last))
        rows.append(("put_many 1,000 x 1 KiB, present", f"{1000 / seconds:,.0f} blobs/s", seconds))
        assert await store.get_many(last) == last
        seconds = await median_seconds(lambda: store.get_many(last))
        rows.append(("get_many 1,000 x 1 KiB", f"{1000 / seconds:,.0f} blobs/s", seconds))

        if stream_mib:
            rows += await bench_stream(store, stream_mib)
    finally:
        await store.aclose()
    return rows


async def bench_stream(store: DiskStore, mib: int) -> list[Row]:
    data = os.urandom(mib * MiB)
    parts = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    rows: list[Row] = []
    for function in range(3):  # distinct keys, so each write is a new file
        digest = Digest(f"{function:064x}", len(data))
        start = time.perf_counter()
        await store.write(digest, chunks(parts))
        seconds = time.perf_counter() - start
        rows.append((f"stream write {mib} MiB, run {function + 1}", f"{mib / seconds:,.0f} MB/s", seconds))
    for run in range(3):
        start = time.perf_counter()
        total = 0
        async for chunk in store.read(digest):
            total += len(chunk)
        seconds = time.perf_counter() - start
        assert total == len(data)
        rows.append((f"stream read {mib} MiB, run {run + 1}", f"{mib / seconds:,.0f} MB/s", seconds))
    return rows


def locations(only: str | None) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    if only in (None, "disk"):
        found.append((f"disk ({tempfile.gettempdir()})", None))
    if only in (None, "shm") and os.path.isdir("/dev/shm"):
        found.append(("tmpfs (/dev/shm)", "/dev/shm"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blobs", type=int, default=100_000)
    parser.add_argument("--stream-mib", type=int, default=512)
    parser.add_argument("--only", choices=["disk", "shm"])
    args = parser.parse_args()
    print(f"{'where':18} {'operation':36} {'result':>18} {'seconds':>9}")
    for label, base in locations(args.only):
        with tempfile.TemporaryDirectory(dir=base, prefix="bench-disk-") as tmp:
            rows = asyncio.run(bench_location(Path(tmp) / "store", args.blobs, args.stream_mib))
        for operation, result, seconds in rows:
            print(f"{label:18} {operation:36} {result:>18} {seconds:9.3f}", flush=True)


if __name__ == "__main__":
    main()
