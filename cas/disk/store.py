"""DiskStore: one file per value under a directory, evicted least-recently-used by size.

How it stays correct and fast, and why:

- **Index in memory** (index.py): digest -> (length, stamp), oldest access
  first, with the byte count. ``find_missing`` answers from it alone, without
  touching the disk; every hit moves to the newest end. At open it is rebuilt from
  a snapshot written at the last clean close on this boot, or else by a full scan
  of the files, which are the only truth (startup.py, scan.py).
- **All or nothing.** A value is written to a temp file beside its final name and
  renamed into place only when its chunk stream ended without error; otherwise
  the temp file is removed (on cancellation too). Leftovers of a crash are removed
  at open.
- **fsync policy: off by default.** The store is a cache and clients re-upload
  what is missing, so losing the last seconds of writes to a power cut is
  acceptable; serving a damaged value is not. Without fsync a crash can persist a
  rename before its data, leaving the file short or empty, so each file's name
  holds its expected length, and a file whose size differs is dropped by the scan
  after a crash or reboot and at every read. ``fsync=True`` adds fdatasync of each
  file and its directory before a write returns, for durability over throughput.
- **Commits** (commit.py): a key's lock spans rename and index update, so an
  eviction of the key cannot slip in between; batches write their files in one
  thread hop per part.
- **Access times survive restarts.** Exactly, through the snapshot, after a clean
  close; approximately after a crash, through mtimes refreshed in the background
  (upkeep.py), by which a scan orders values.
- **Eviction** (upkeep.py) removes the oldest values until the total is under
  ``max_bytes``, right after each write. A key being written is skipped, and a
  reader holding a value open keeps reading it after it is unlinked (POSIX).
- **Threads.** Blocking calls run in the store's own executor behind a semaphore
  (IoLane, cas/localfs/io_lane.py); batches (``put_many``, ``get_many``) do their files in
  one hop per thread, streamed writes move data in buffers of about a megabyte,
  and streamed reads read ahead a chunk at a time (framed reads, ``read_framed``,
  ``FRAMED_CHUNKS_PER_HOP`` chunks, each behind its frame), or, with ``mapped_reads``, map
  the value a window at a time (``MAP_WINDOW``): fewer copies and thread hops, but
  a disk's read error or a file truncated by something else then kills the process
  with SIGBUS instead of failing one read, so it is the operator's choice. The
  event loop only does dict work, bounded by the size of a request.

The value stored under a digest need not be that digest's content (the action cache
stores ActionResults under action digests); checking content is VerifyingStore's job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from cas.digest import Digest
from cas.disk.commit import DiskCommitter
from cas.disk.index import DiskIndex, IndexEntry
from cas.disk.key_locks import KeyLocks
from cas.disk.layout import value_path
from cas.disk.read_windows import read_windows
from cas.disk.startup import open_directory, release_opened, save_snapshot
from cas.disk.temp_writer import TempFileWriter
from cas.disk.upkeep import DiskUpkeep
from cas.errors import Internal, NotFound, ReapiError
from cas.localfs import files as disk_files
from cas.localfs import framed_reads
from cas.localfs.files import CorruptValue
from cas.localfs.io_lane import IoLane, close_after
from cas.store import READ_CHUNK_SIZE, BlobStore, Framed, check_read_range, closing

log = logging.getLogger("reapi.cas.disk")

DEFAULT_IO_THREADS = 4
# Persist an access time at most this often per value (seconds).
DEFAULT_TOUCH_INTERVAL = 600.0
# Streamed writes are gathered into buffers this large before each thread hop. An
# idle partial upload (server/uploads.py keeps them open) holds up to this much.
DEFAULT_WRITE_BUFFER = 1 << 20
# A read retries when the value was overwritten under a new length meanwhile.
_READ_ATTEMPTS = 3
# A streamed read maps this much of a value per thread hop (handed out in read chunks):
# no copy out of the page cache, and an eighth of the hops of reading chunk by chunk.
MAP_WINDOW = 8 << 20
# A framed read (``read_framed``) reads this many chunks per thread hop (2, 4 and 8
# measured alike; each reader holds up to twice this many chunks, one hop read ahead).
FRAMED_CHUNKS_PER_HOP = 2
# What one thread hop of a streamed read hands back: a window of bytes, or of framed chunks.
W = TypeVar("W")


class DiskStore(BlobStore):
    """Values as files under ``root``. Build with ``await DiskStore.open(path, ...)``."""

    def __init__(
        self,
        root: str,
        max_bytes: int,
        index: OrderedDict[Digest, IndexEntry],
        executor: ThreadPoolExecutor,
        lock_fd: int,
        *,
        name: str = "disk",
        io_threads: int = DEFAULT_IO_THREADS,
        fsync: bool = False,
        touch_interval: float = DEFAULT_TOUCH_INTERVAL,
        clock: Callable[[], float] = time.time,
        chunk_size: int = READ_CHUNK_SIZE,
        write_buffer: int = DEFAULT_WRITE_BUFFER,
        mapped_reads: bool = False,
    ) -> None:
        self.root = root
        self.mapped_reads = mapped_reads
        self.name = name
        self.chunk_size = chunk_size
        self.write_buffer = write_buffer
        self._clock = clock
        self._index = DiskIndex(index, touch_interval)
        self._executor = executor
        self.io_threads = io_threads
        self._lane = IoLane(executor, io_threads, name)
        self._lock_fd = lock_fd
        self._locks = KeyLocks()
        self._upkeep = DiskUpkeep(root, name, self._index, self._lane, self._locks)
        self._commits = DiskCommitter(
            root, name, self._index, self._lane, self._locks, self._upkeep, max_bytes=max_bytes, fsync=fsync, clock=clock
        )

    # -- opening and closing -------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        max_bytes: int,
        name: str = "disk",
        *,
        io_threads: int = DEFAULT_IO_THREADS,
        fsync: bool = False,
        touch_interval: float = DEFAULT_TOUCH_INTERVAL,
        clock: Callable[[], float] = time.time,
        chunk_size: int = READ_CHUNK_SIZE,
        write_buffer: int = DEFAULT_WRITE_BUFFER,
        mapped_reads: bool = False,
    ) -> DiskStore:
        """Lock the directory, clean crash leftovers, rebuild the index, and evict down
        to ``max_bytes`` if the cap shrank."""
        root = os.path.abspath(os.fspath(path))
        executor = ThreadPoolExecutor(io_threads, thread_name_prefix=f"disk-{name}")
        started = time.monotonic()
        opening = asyncio.ensure_future(asyncio.to_thread(open_directory, root, executor, name))
        try:
            lock_fd, index, how = await asyncio.shield(opening)
        except BaseException:
            # If cancelled, the thread still finishes: release what it took then.
            opening.add_done_callback(lambda f: release_opened(f, executor))
            raise
        store = cls(
            root, max_bytes, index, executor, lock_fd, name=name, io_threads=io_threads, fsync=fsync,
            touch_interval=touch_interval, clock=clock, chunk_size=chunk_size, write_buffer=write_buffer,
            mapped_reads=mapped_reads,
        )
        log.info(
            "disk store %r at %s: %d values, %d bytes, index rebuilt in %.2fs (%s)",
            name, root, len(index), store.total_bytes, time.monotonic() - started, how,
        )
        store._upkeep.evict_if_needed(max_bytes)
        return store

    async def drain(self) -> None:
        """Finish background work: queued access-time refreshes, evictions, cleanups."""
        self._upkeep.flush_touches()
        await self._lane.drain()

    async def aclose(self) -> None:
        """Refuse new work, finish what runs, and write the index snapshot for a fast reopen."""
        if self._lane.closed:
            return
        self._upkeep.flush_touches()
        self._lane.closed = True
        await self._lane.drain()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, save_snapshot, self.root, self._index.entries()
            )
        except OSError as err:
            log.warning("disk store %r: no index snapshot written (the next open scans): %s", self.name, err)
        await self._lane.shutdown()
        os.close(self._lock_fd)

    def __len__(self) -> int:
        return len(self._index)

    def watch_evictions(self, observe: Callable[[list[float]], None]) -> None:
        """Have ``observe`` told, at each eviction, how long each evicted value had gone unused (seconds)."""
        clock = self._clock
        self._upkeep.on_evicted = lambda stamps: observe([max(0.0, clock() - stamp) for stamp in stamps])

    @property
    def max_bytes(self) -> int:
        return self._commits.max_bytes

    @property
    def fsync(self) -> bool:
        return self._commits.fsync

    @property
    def evicted(self) -> int:
        """Values evicted since open."""
        return self._upkeep.evicted

    @property
    def total_bytes(self) -> int:
        return self._index.total_bytes

    # -- the index -----------------------------------------------------------------

    def path_of(self, digest: Digest) -> str | None:
        """Where a value lives now (for hardlinking), or None if not held."""
        entry = self._index.get(digest)
        return None if entry is None else value_path(self.root, digest, entry.length)

    def _os_error(self, err: OSError, action: str, path: str) -> ReapiError:
        return disk_files.as_store_error(self.name, err, action, path)

    def _lookup(self, digest: Digest) -> IndexEntry:
        entry = self._index.get(digest)
        if entry is None:
            raise NotFound(f"{digest} not found in {self.name}")
        self._upkeep.hit(digest, entry, self._clock())
        return entry

    # -- BlobStore -----------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return self._upkeep.hit_many(digests, self._clock())

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        fd, data, end = await self._open_for_read(digest, offset, limit, self.chunk_size, disk_files.open_value)
        if fd < 0:
            if data:
                yield data
            return
        if self.mapped_reads:  # windows of the file's pages (cas/localfs/files.py map_range)
            span, take = max(self.chunk_size, MAP_WINDOW - MAP_WINDOW % self.chunk_size), disk_files.map_range
        else:
            span, take = self.chunk_size, disk_files.read_range
        failed = functools.partial(self._read_failed, digest)
        windows: AsyncIterator[bytes | memoryview] = read_windows(
            self._lane, fd, data, offset + len(data), end, span, take, _unmap, failed)
        async with closing(windows):
            async for window in windows:
                if isinstance(window, bytes):  # the first chunk, read as the value was opened
                    yield window
                    continue
                for start in range(0, len(window), self.chunk_size):
                    yield cast(bytes, window[start : start + self.chunk_size])  # views: see cas/store.py read
                disk_files.unmap(window)

    def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        if self.mapped_reads:  # the join copies out of the maps: the one copy either way
            return BlobStore.read_framed(self, digest, frame, offset, limit)
        return self._read_framed(digest, frame, offset, limit)

    async def _read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int, limit: int | None
    ) -> AsyncIterator[Framed]:
        """Chunks read behind their frames (cas/localfs/framed_reads.py), several per hop."""
        span = self.chunk_size * FRAMED_CHUNKS_PER_HOP
        opener = functools.partial(framed_reads.open_framed, chunk_size=self.chunk_size, frame=frame)
        fd, framed, end = await self._open_for_read(digest, offset, limit, span, opener)
        if fd < 0:
            for chunk in framed:
                yield chunk
            return
        take = functools.partial(framed_reads.read_framed_range, chunk_size=self.chunk_size, frame=frame)
        position, failed = offset + sum(size for _, size in framed), functools.partial(self._read_failed, digest)
        windows = read_windows(self._lane, fd, framed, position, end, span, take, lambda _: None, failed)
        async with closing(windows):
            async for window in windows:
                for chunk in window:
                    yield chunk

    def _read_failed(self, digest: Digest, err: CorruptValue | OSError) -> ReapiError:
        if isinstance(err, CorruptValue):
            return Internal(f"{digest} in {self.name} changed size while being read: {err}")
        return self._os_error(err, "read", str(digest))

    async def _open_for_read(
        self, digest: Digest, offset: int, limit: int | None, span: int,
        opener: Callable[[str, int, int, int, bool], tuple[int, W]],
    ) -> tuple[int, W, int]:
        """Open a value and read its first ``span`` bytes in one hop with ``opener``
        (files.open_value's signature): (fd or -1, what it read, end)."""
        for _ in range(_READ_ATTEMPTS):
            entry = self._lookup(digest)
            end = check_read_range(digest, entry.length, offset, limit)
            first = min(span, end - offset)
            keep_open = offset + first < end
            path = value_path(self.root, digest, entry.length)
            opening = await self._lane.started(opener, path, entry.length, offset, first, keep_open)
            try:
                fd, data = await asyncio.shield(opening)
            except asyncio.CancelledError:
                close_after(opening, lambda: _close_opened(opening))
                raise
            except FileNotFoundError:
                self._index.forget(digest, entry)  # evicted, or overwritten under a new length
                continue
            except CorruptValue as err:
                self._upkeep.drop_corrupt(digest, entry, err)
                raise NotFound(f"{digest} in {self.name} was damaged (a crash?) and has been removed") from None
            except OSError as err:
                raise self._os_error(err, "read", path) from None
            return fd, data, end
        raise NotFound(f"{digest} not found in {self.name}")

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        commits = self._commits
        writer = TempFileWriter(self._lane, commits.temp_path(digest), self.write_buffer)
        length = 0
        try:
            async for chunk in chunks:
                if chunk:
                    length += len(chunk)
                    commits.check_size(digest, length)
                    await writer.add(chunk)
            if not writer.file_started:  # it fit in one buffer: one hop writes and commits it
                failures = await commits.put_values({digest: writer.whole_value()})
                if failures:
                    raise failures[digest]
                return
            fd, rest = await writer.hand_off()
            await commits.commit_stream(digest, fd, writer.tmp_path, rest, length)
        except OSError as err:
            raise self._os_error(err, "write", writer.tmp_path) from None
        finally:
            # Removes the temp file of a write that failed or was cancelled; nothing
            # to do once it was handed off (or if none was made).
            await asyncio.shield(writer.discard())

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        return await self._commits.put_values(blobs)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        index = self._index
        now = self._clock()
        wanted = []
        for digest in digests:
            entry = index.get(digest)
            if entry is not None:
                self._upkeep.hit(digest, entry, now)
                wanted.append((digest, entry))
        return await self._read_whole(wanted) if wanted else {}

    async def _read_whole(self, wanted: list[tuple[Digest, IndexEntry]]) -> dict[Digest, bytes]:
        """Read whole values in one hop; vanished or damaged ones are left out."""
        items = [(value_path(self.root, d, e.length), e.length) for d, e in wanted]
        try:
            reading = await self._lane.started_many(disk_files.read_values, [(part,) for part in self._lane.parts(items)])
            results = [result for part in await asyncio.shield(reading) for result in part]
        except OSError as err:
            raise self._os_error(err, "read", self.root) from None
        out = {}
        for (digest, entry), result in zip(wanted, results):
            if isinstance(result, bytes):
                out[digest] = result
            elif result is None:
                self._index.forget(digest, entry)
            else:
                self._upkeep.drop_corrupt(digest, entry, result)
        return out


def _unmap(window: bytes | memoryview) -> None:
    if isinstance(window, memoryview):
        disk_files.unmap(window)


def _close_opened(opened: asyncio.Future[tuple[int, Any]]) -> None:
    """Close the descriptor a thread opened for a reader that was cancelled meanwhile."""
    if not opened.cancelled() and opened.exception() is None and opened.result()[0] >= 0:
        os.close(opened.result()[0])
