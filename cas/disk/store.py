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
- **Access times survive restarts.** Exactly, through the snapshot, after a clean
  close; approximately after a crash: a hit whose stamp is older than
  ``touch_interval`` queues a utime (mtime := now) for a background thread, and
  the scan orders values by mtime.
- **Eviction** removes the oldest values until the total is under ``max_bytes``,
  right after each write. A key being written is skipped (KeyLocks), and a reader
  holding a value open keeps reading it after it is unlinked (POSIX semantics).
- **Threads.** Blocking calls run in the store's own executor behind a semaphore
  (IoLane, cas/localfs/io_lane.py); batches (``put_many``, ``get_many``) do their files in
  one hop per thread, and streams move data in buffers of about a megabyte. The
  event loop only does dict work, bounded by the size of a request.

The value stored under a digest need not be that digest's content (the action cache
stores ActionResults under action digests); checking content is VerifyingStore's job.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cas.localfs import files as disk_files
from cas.digest import Digest
from cas.localfs.files import CorruptValue, PendingWrite
from cas.disk.index import DiskIndex, IndexEntry
from cas.disk.layout import temp_path, value_path
from cas.disk.key_locks import KeyLocks
from cas.disk.startup import open_directory, release_opened, save_snapshot
from cas.disk.temp_writer import TempFileWriter
from cas.localfs.io_lane import IoLane, close_after, then
from cas.errors import Internal, NotFound, ReapiError, ResourceExhausted
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range

log = logging.getLogger("reapi.cas.disk")
T = TypeVar("T")

DEFAULT_IO_THREADS = 4
# Persist an access time at most this often per value (seconds).
DEFAULT_TOUCH_INTERVAL = 600.0
# Streamed writes are gathered into buffers this large before each thread hop. An
# idle partial upload (server/uploads.py keeps them open) holds up to this much.
DEFAULT_WRITE_BUFFER = 1 << 20
# The smallest part of a batch worth its own thread.
_MIN_PART = 64
# A read retries when the value was overwritten under a new length meanwhile.
_READ_ATTEMPTS = 3


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
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.name = name
        self.fsync = fsync
        self.chunk_size = chunk_size
        self.write_buffer = write_buffer
        self._clock = clock
        self._index = DiskIndex(index, touch_interval)
        self._executor = executor
        self.io_threads = io_threads
        self._lane = IoLane(executor, io_threads, name)
        self._lock_fd = lock_fd
        self._locks = KeyLocks()
        self._tmp_ids = itertools.count()
        self._touch_queue: dict[Digest, tuple[str, float]] = {}  # path, access time
        self.evicted = 0

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
        )
        log.info(
            "disk store %r at %s: %d values, %d bytes, index rebuilt in %.2fs (%s)",
            name, root, len(index), store.total_bytes, time.monotonic() - started, how,
        )
        store._evict_if_needed()
        return store

    async def drain(self) -> None:
        """Finish background work: queued access-time refreshes, evictions, cleanups."""
        self._flush_touches()
        await self._lane.drain()

    async def aclose(self) -> None:
        """Refuse new work, finish what runs, and write the index snapshot for a fast reopen."""
        if self._lane.closed:
            return
        self._flush_touches()
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

    @property
    def total_bytes(self) -> int:
        return self._index.total_bytes

    # -- the index -----------------------------------------------------------------

    def path_of(self, digest: Digest) -> str | None:
        """Where a value lives now (for hardlinking), or None if not held."""
        entry = self._index.get(digest)
        return None if entry is None else value_path(self.root, digest, entry.length)

    def _refresh(self, digest: Digest, entry: IndexEntry, now: float) -> None:
        """Mark a hit: newest in memory now, on disk lazily."""
        if self._index.hit(digest, entry, now):
            self._queue_touch(digest, entry, now)

    def _queue_touch(self, digest: Digest, entry: IndexEntry, now: float) -> None:
        """Persist ``now`` as the value's access time soon, in a batch, off the loop."""
        if not self._touch_queue:
            asyncio.get_running_loop().call_soon(self._flush_touches)
        self._touch_queue[digest] = (value_path(self.root, digest, entry.length), now)

    def _flush_touches(self) -> None:
        if not self._touch_queue:
            return
        touches = list(self._touch_queue.values())
        self._touch_queue.clear()
        self._lane.start(disk_files.touch_files, touches).add_done_callback(self._log_failures("refresh"))

    def _lookup(self, digest: Digest) -> IndexEntry:
        entry = self._index.get(digest)
        if entry is None:
            raise NotFound(f"{digest} not found in {self.name}")
        self._refresh(digest, entry, self._clock())
        return entry

    def _drop_corrupt(self, digest: Digest, entry: IndexEntry, error: CorruptValue) -> None:
        log.warning("disk store %r: dropping damaged value %s: %s", self.name, digest, error)
        self._index.forget(digest, entry)
        if self._locks.try_acquire(digest):  # else a writer is replacing it right now
            future = self._lane.start(disk_files.remove_files, [value_path(self.root, digest, entry.length)])
            future.add_done_callback(lambda _: self._locks.release(digest))

    def _evict_if_needed(self) -> None:
        """Remove the least recently used values until under the cap. Keys being
        written are skipped; the victims' keys stay locked until their files are gone."""
        victims = self._index.take_oldest(self.max_bytes, self._locks.try_acquire)
        if not victims:
            return
        self.evicted += len(victims)
        paths = [value_path(self.root, d, e.length) for d, e in victims]
        future = self._lane.start(disk_files.remove_files, paths)
        future.add_done_callback(lambda _: self._locks.release_all(d for d, _ in victims))
        future.add_done_callback(self._log_failures("evict"))

    def _log_failures(self, action: str) -> Callable[[asyncio.Future[list[tuple[str, OSError]]]], None]:
        def report(future: asyncio.Future[list[tuple[str, OSError]]]) -> None:
            if future.cancelled():
                return
            if future.exception() is not None:
                log.error("disk store %r: %s failed: %s", self.name, action, future.exception())
                return
            for path, err in future.result():
                log.error("disk store %r: cannot %s %s: %s", self.name, action, path, err)

        return report

    def _os_error(self, err: OSError, action: str, path: str) -> ReapiError:
        return disk_files.as_store_error(self.name, err, action, path)

    def _split(self, items: list[T]) -> list[list[T]]:
        """A batch in parts for parallel threads, each big enough to be worth a hop."""
        parts = max(1, min(self.io_threads, len(items) // _MIN_PART))
        size = -(-len(items) // parts)
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _temp_path(self, digest: Digest) -> str:
        return temp_path(self.root, digest, next(self._tmp_ids))

    def _check_size(self, digest: Digest, length: int) -> None:
        if length > self.max_bytes:
            raise ResourceExhausted(
                f"{digest}: a value of {length} bytes is larger than {self.name}'s {self.max_bytes}-byte capacity"
            )

    # -- BlobStore -----------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        now = self._clock()
        missing, stale = self._index.hit_many(digests, now)
        for digest, entry in stale:
            self._queue_touch(digest, entry, now)
        return missing

    async def has(self, digest: Digest) -> bool:
        entry = self._index.get(digest)
        if entry is not None:
            self._refresh(digest, entry, self._clock())
        return entry is not None

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        fd, data, end = await self._open_for_read(digest, offset, limit)
        if fd < 0:
            if data:
                yield data
            return
        position = offset + len(data)
        pending: asyncio.Future[bytes] | None = None
        try:
            # Read ahead: the next chunk is read while the consumer handles this one.
            pending = await self._lane.started(disk_files.pread_exact, fd, min(self.chunk_size, end - position), position)
            yield data
            while pending is not None:
                chunk = await asyncio.shield(pending)
                position += len(chunk)
                pending = None
                if position < end:
                    pending = await self._lane.started(
                        disk_files.pread_exact, fd, min(self.chunk_size, end - position), position
                    )
                yield chunk
        except CorruptValue as err:
            raise Internal(f"{digest} in {self.name} changed size while being read: {err}") from None
        except OSError as err:
            raise self._os_error(err, "read", str(digest)) from None
        finally:
            close_after(pending, lambda: os.close(fd))

    async def _open_for_read(self, digest: Digest, offset: int, limit: int | None) -> tuple[int, bytes, int]:
        """Open a value and read its first chunk in one hop: (fd or -1, bytes, end)."""
        for _ in range(_READ_ATTEMPTS):
            entry = self._lookup(digest)
            end = check_read_range(digest, entry.length, offset, limit)
            first = min(self.chunk_size, end - offset)
            keep_open = offset + first < end
            path = value_path(self.root, digest, entry.length)
            opening = await self._lane.started(disk_files.open_value, path, entry.length, offset, first, keep_open)
            try:
                fd, data = await asyncio.shield(opening)
            except asyncio.CancelledError:
                close_after(opening, lambda: _close_opened(opening))
                raise
            except FileNotFoundError:
                self._index.forget(digest, entry)  # evicted, or overwritten under a new length
                continue
            except CorruptValue as err:
                self._drop_corrupt(digest, entry, err)
                raise NotFound(f"{digest} in {self.name} was damaged (a crash?) and has been removed") from None
            except OSError as err:
                raise self._os_error(err, "read", path) from None
            return fd, data, end
        raise NotFound(f"{digest} not found in {self.name}")

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        writer = TempFileWriter(self._lane, self._temp_path(digest), self.write_buffer)
        length = 0
        try:
            async for chunk in chunks:
                if chunk:
                    length += len(chunk)
                    self._check_size(digest, length)
                    await writer.add(chunk)
            if not writer.file_started:  # it fit in one buffer: one hop writes and commits it
                await self.put_bytes(digest, writer.whole_value())
                return
            fd, rest = await writer.hand_off()
            await self._commit_stream(digest, fd, writer.tmp_path, rest, length)
        except OSError as err:
            raise self._os_error(err, "write", writer.tmp_path) from None
        finally:
            # Removes the temp file of a write that failed or was cancelled; nothing
            # to do once it was handed off (or if none was made).
            await asyncio.shield(writer.discard())

    async def _discard(self, fd: int, tmp_path: str) -> None:
        await self._lane.start(disk_files.discard, fd, tmp_path)

    async def _commit_stream(self, digest: Digest, fd: int, tmp_path: str, rest: list[bytes], length: int) -> None:
        """Write the rest, close and rename into place, and index it; the lock on the
        key spans rename and index update, so eviction cannot slip in between."""
        try:
            await self._locks.acquire(digest)
        except BaseException:
            await asyncio.shield(self._discard(fd, tmp_path))
            raise
        try:
            old = self._index.get(digest)
            old_path = value_path(self.root, digest, old.length) if old is not None and old.length != length else None
            final_path = value_path(self.root, digest, length)
            finishing = await self._lane.started(
                disk_files.finish_stream, fd, rest, tmp_path, final_path, old_path, self.fsync
            )
        except BaseException:
            self._locks.release(digest)
            await asyncio.shield(self._discard(fd, tmp_path))
            raise

        def apply(done: asyncio.Future[None]) -> None:
            try:
                if done.exception() is None:
                    self._index.insert(digest, length, self._clock())
            finally:
                self._locks.release(digest)
            err = done.exception()
            if isinstance(err, OSError):
                raise self._os_error(err, "store", final_path)
            if err is not None:
                raise err
            self._evict_if_needed()

        await asyncio.shield(then(finishing, apply))

    # -- fast paths for many small values --------------------------------------------

    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        failures = await self._put_values({digest: data})
        if failures:
            raise failures[digest]

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        return await self._put_values(blobs)

    async def _put_values(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures: dict[Digest, ReapiError] = {}
        accepted: dict[Digest, bytes] = {}
        for digest, data in blobs.items():
            try:
                self._check_size(digest, len(data))
            except ReapiError as err:
                failures[digest] = err
                continue
            accepted[digest] = data
        if not accepted:
            return failures
        keys = await self._locks.acquire_all(accepted)
        try:
            # Planned under the locks, so each key's current length is stable until applied.
            plan = []
            for digest, data in accepted.items():
                old = self._index.get(digest)
                length = len(data)
                plan.append(
                    PendingWrite(
                        tmp_path=self._temp_path(digest),
                        final_path=value_path(self.root, digest, length),
                        old_path=None if old is None or old.length == length else value_path(self.root, digest, old.length),
                        data=data,
                        compare=old is not None and old.length == length,
                    )
                )
            writing = await self._lane.started_many(
                disk_files.write_values, [(part, self.fsync) for part in self._split(plan)]
            )
        except BaseException:
            self._locks.release_all(keys)
            raise

        def apply(done: asyncio.Future[list[list[bool | OSError]]]) -> dict[Digest, ReapiError]:
            try:
                outcomes = [outcome for part in done.result() for outcome in part]
            except BaseException as exc:  # noqa: BLE001 - becomes every item's failure
                err = exc if isinstance(exc, ReapiError) else Internal(f"{self.name}: batch write failed: {exc!r}")
                outcomes = [err] * len(plan)  # type: ignore[list-item]
            finally:
                self._locks.release_all(keys)
            now = self._clock()
            for (digest, data), item, outcome in zip(accepted.items(), plan, outcomes):
                if outcome is True:
                    self._index.insert(digest, len(data), now)
                elif outcome is False:  # identical value already stored
                    entry = self._index.get(digest)
                    if entry is not None:
                        self._refresh(digest, entry, now)
                elif isinstance(outcome, OSError):
                    failures[digest] = self._os_error(outcome, "store", item.final_path)
                else:
                    failures[digest] = outcome  # type: ignore[assignment]
            self._evict_if_needed()
            return failures

        return await asyncio.shield(then(writing, apply))

    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        entry = self._lookup(digest)
        if max_size is not None and entry.length > max_size:
            raise ResourceExhausted(f"value of {digest} is {entry.length} bytes, over the {max_size}-byte limit")
        found = await self._read_whole([(digest, entry)])
        if digest not in found:
            raise NotFound(f"{digest} not found in {self.name}")
        return found[digest]

    async def get_or_none(self, digest: Digest) -> bytes | None:
        try:
            return await self.get_bytes(digest)
        except NotFound:
            return None

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        index = self._index
        now = self._clock()
        wanted = []
        for digest in digests:
            entry = index.get(digest)
            if entry is not None:
                self._refresh(digest, entry, now)
                wanted.append((digest, entry))
        return await self._read_whole(wanted) if wanted else {}

    async def _read_whole(self, wanted: list[tuple[Digest, IndexEntry]]) -> dict[Digest, bytes]:
        """Read whole values in one hop; vanished or damaged ones are left out."""
        items = [(value_path(self.root, d, e.length), e.length) for d, e in wanted]
        try:
            reading = await self._lane.started_many(disk_files.read_values, [(part,) for part in self._split(items)])
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
                self._drop_corrupt(digest, entry, result)
        return out


def _close_opened(opened: asyncio.Future[tuple[int, bytes]]) -> None:
    """Close the descriptor a thread opened for a reader that was cancelled meanwhile."""
    if not opened.cancelled() and opened.exception() is None and opened.result()[0] >= 0:
        os.close(opened.result()[0])
