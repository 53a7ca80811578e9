"""PackedStore alone (no gRPC), next to DiskStore on the same rows, on tmpfs and the work disk.

    .venv/bin/python -m tests.benchmarks.bench_packed_store [--values 100000] [--only shm|disk] [--no-sizes]

Rows, per location (each the median of several runs; "cpu" is this process's
user + system time over the same runs, all threads, so it does not depend on what
else the shared machine is doing):
- put_many of 1,000 new 1 KiB values; get_many of the same 1,000;
- find_missing of 10,000 held digests;
- a point get of a 300-byte value (an action result) as the store serves it (a copy
  out of the map on the event loop), and the alternatives it avoids: a thread hop
  doing the same copy, and a thread hop doing pread;
- the batch checksum per MiB: zlib.crc32 (used) and zlib.adler32;
- reopening a store of ``--values`` 1 KiB values: after a clean close (index files),
  after a crash (the open segment is scanned), and with every index file gone (a
  full scan, the worst case);
- with sizes on: put_bytes then get_bytes of single values of 4 KiB to 1 MiB, packed
  and disk, to choose the size_partition threshold of the default CAS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from cas.digest import Digest
from cas.disk.store import DiskStore
from cas.packed.store import PackedStore
from cas.store import BlobStore
from tests.cas.packed_support import abandon

REPEATS = 7
MiB = 1 << 20
Row = tuple[str, str, float, float]  # operation, result, wall seconds, cpu seconds (per run)


async def measure(call: Callable[[], Awaitable[object]], repeats: int = REPEATS) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds) per call."""
    walls = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), (time.process_time() - cpu_start) / repeats


def values(count: int, seed: str, size: int = 1024) -> dict[Digest, bytes]:
    out = {}
    for i in range(count):
        data = f"{seed}-{i}-".encode().ljust(size, b".")
        out[Digest.of(data)] = data
    return out


async def open_packed(root: Path) -> PackedStore:
    return await PackedStore.open(root, 64 << 30, "bench")


async def open_disk(root: Path) -> DiskStore:
    return await DiskStore.open(root, 64 << 30, "bench")


async def batch_rows(kind: str, store: BlobStore) -> list[Row]:
    rows: list[Row] = []
    batches = iter([values(1000, f"{kind}-put-{i}") for i in range(REPEATS)])
    last: dict[Digest, bytes] = {}

    async def put_new() -> None:
        nonlocal last
        last = next(batches)
        assert await store.put_many(last) == {}

    wall, cpu = await measure(put_new)
    rows.append((f"{kind}: put_many 1,000 x 1 KiB", f"{1000 / wall:,.0f} values/s", wall, cpu))
    assert await store.get_many(last) == last
    wall, cpu = await measure(lambda: store.get_many(last))
    rows.append((f"{kind}: get_many 1,000 x 1 KiB", f"{1000 / wall:,.0f} values/s", wall, cpu))
    held = list(values(10_000, f"{kind}-held", size=64))
    for start in range(0, len(held), 1000):
        await store.put_many({d: b"x" * 64 for d in held[start : start + 1000]})
    wall, cpu = await measure(lambda: store.find_missing(held))
    rows.append((f"{kind}: find_missing 10,000 held", f"{10_000 / wall:,.0f} digests/s", wall, cpu))
    action = Digest.of(f"{kind} action".encode())
    await store.put_bytes(action, b"r" * 300)

    async def point_gets() -> None:
        for _ in range(1000):
            await store.get_bytes(action)

    wall, cpu = await measure(point_gets)
    rows.append((f"{kind}: get_bytes of 300 B (x1000)", f"{wall * 1000:.1f} us each", wall, cpu))
    return rows


async def point_get_alternatives(store: PackedStore) -> list[Row]:
    """What serving a tiny value from the event loop saves over a thread hop."""
    action = Digest.of(b"packed action")
    location = store._index.entries[action]
    segment, offset, length = location.segment, location.offset, location.length
    loop = asyncio.get_running_loop()
    fd = os.open(segment.path + ".seg", os.O_RDONLY)
    rows: list[Row] = []
    try:
        async def hop_copy() -> None:
            for _ in range(1000):
                await loop.run_in_executor(None, segment.value, offset, length)

        async def hop_pread() -> None:
            for _ in range(1000):
                await loop.run_in_executor(None, os.pread, fd, length, offset)

        for label, call in (("thread hop + copy from map", hop_copy), ("thread hop + pread", hop_pread)):
            wall, cpu = await measure(call)
            rows.append((f"packed: 300 B via {label} (x1000)", f"{wall * 1000:.1f} us each", wall, cpu))
    finally:
        os.close(fd)
    return rows


def checksum_rows() -> list[Row]:
    data = os.urandom(MiB)
    rows: list[Row] = []
    for name, fn in (("crc32", zlib.crc32), ("adler32", zlib.adler32)):
        walls = []
        cpu_start = time.process_time()
        for _ in range(50):
            start = time.perf_counter()
            fn(data)
            walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        rows.append((f"checksum: zlib.{name} of 1 MiB", f"{MiB / wall / 1e9:.1f} GB/s", wall, (time.process_time() - cpu_start) / 50))
    return rows


async def restart_rows(root: Path, count: int) -> list[Row]:
    rows: list[Row] = []
    store = await open_packed(root)
    for start in range(0, count, 1000):
        assert await store.put_many(values(min(1000, count - start), f"restart-{start}")) == {}
    segments = len(store.segments)
    await store.aclose()

    async def reopen(label: str) -> PackedStore:
        cpu_start = time.process_time()
        start = time.perf_counter()
        opened = await open_packed(root)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert len(opened) == count
        rows.append((f"packed: reopen {count:,} values, {label}", f"{count / wall:,.0f} values/s", wall, cpu))
        return opened

    store = await reopen(f"clean ({segments} idx files)")
    assert await store.put_many(values(1000, "after-restart")) == {}
    await store.drain()
    await abandon(store)  # as a killed process leaves it: the open segment unsealed
    count += 1000
    store = await reopen("after a crash")
    await store.aclose()
    for index_file in root.glob("*.idx"):
        index_file.unlink()
    store = await reopen("no idx files (full scan)")
    await store.aclose()
    return rows


async def size_rows(root: Path) -> list[Row]:
    """Single values through put_bytes / get_bytes, packed vs disk, by size."""
    rows: list[Row] = []
    packed = await PackedStore.open(root / "packed-sizes", 64 << 30, "sizes", max_value_size=MiB)
    disk = await open_disk(root / "disk-sizes")
    try:
        for size in (4 << 10, 16 << 10, 64 << 10, 256 << 10, MiB):
            for kind, store in (("packed", packed), ("disk", disk)):
                blobs = iter(values(REPEATS * 20, f"{kind}-size-{size}", size=size).items())

                async def put_twenty() -> None:
                    for _ in range(20):
                        await store.put_bytes(*next(blobs))

                wall, cpu = await measure(put_twenty)
                rows.append((f"{kind}: put_bytes {size >> 10} KiB", f"{wall / 20 * 1e6:,.0f} us each", wall / 20, cpu / 20))
                digest = Digest.of(f"{kind}-size-{size}-0-".encode().ljust(size, b"."))

                async def get_twenty() -> None:
                    for _ in range(20):
                        await store.get_bytes(digest)

                wall, cpu = await measure(get_twenty)
                rows.append((f"{kind}: get_bytes {size >> 10} KiB", f"{wall / 20 * 1e6:,.0f} us each", wall / 20, cpu / 20))
    finally:
        await packed.aclose()
        await disk.aclose()
    return rows


async def bench_location(root: Path, count: int, sizes: bool) -> list[Row]:
    rows: list[Row] = []
    packed = await open_packed(root / "packed")
    disk = await open_disk(root / "disk")
    try:
        rows += await batch_rows("packed", packed)
        rows += await point_get_alternatives(packed)
        rows += await batch_rows("disk", disk)
    finally:
        await packed.aclose()
        await disk.aclose()
    rows += checksum_rows()
    rows += await restart_rows(root / "restart", count)
    if sizes:
        rows += await size_rows(root)
    return rows


def locations(only: str | None) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    if only in (None, "shm") and os.path.isdir("/dev/shm"):
        found.append(("tmpfs (/dev/shm)", "/dev/shm"))
    if only in (None, "disk"):
        found.append((f"disk ({tempfile.gettempdir()})", None))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=100_000, help="values in the restart rows")
    parser.add_argument("--only", choices=["shm", "disk"])
    parser.add_argument("--no-sizes", action="store_true", help="skip the per-size rows")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores, shared)")
    print(f"| {'where':16} | {'operation':52} | {'result':>20} | {'wall ms':>9} | {'cpu ms':>8} |")
    print(f"|{'-' * 18}|{'-' * 54}|{'-' * 22}|{'-' * 11}|{'-' * 10}|")
    for label, base in locations(args.only):
        with tempfile.TemporaryDirectory(dir=base, prefix="bench-packed-") as tmp:
            rows = asyncio.run(bench_location(Path(tmp), args.values, not args.no_sizes))
        for operation, result, wall, cpu in rows:
            print(f"| {label[:16]:16} | {operation:52} | {result:>20} | {wall * 1000:9.3f} | {cpu * 1000:8.3f} |", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
