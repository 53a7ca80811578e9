"""PackedStore: small values appended to large segment files, found through an index in memory.

Why it exists: the disk store keeps one file per value, and creating a file costs
20-250 us in the kernel, which caps BatchUpdateBlobs of 1 KiB blobs at about 30,000
blobs/s and makes every action cache write and read a file system round trip. Here a
thousand values are one append (one pwritev, in one thread hop), a read is a copy
out of a memory map on the event loop (no thread hop, no system call), and the
index answers FindMissingBlobs alone. The layout follows Buildbarn's block-based
local storage in spirit: a log of large blocks, eviction of the oldest block whole,
and recently used values copied forward first.

How it stays correct:

- **Log and index.** Values go into batches appended to the newest segment
  (writer.py: group commit, one write at a time, the index updated in write
  order, so the newest write of a key wins in memory as on disk). The index maps a
  key to (segment, offset, length) (index.py). Written bytes are never
  changed, so a reader holding a segment's map always sees whole values.
- **All or nothing.** A streamed write is gathered in memory (at most
  ``max_value_size``) and queued only once its stream ended without error.
- **Crash safety** (format.py). Each batch carries two CRC-32s (header and
  body) plus its segment and offset; a scan trusts nothing that fails them, so a
  batch torn by a crash or power cut is dropped, never served.
- **fsync: off by default**, like the disk store: a crash may lose the last
  seconds of writes (clients upload again) but never serves damaged bytes.
  ``fsync=True`` adds fdatasync of each batch before its writers return. Either
  way a full segment is flushed once when sealed, before its index file is
  written, so index files can be trusted after a power cut.
- **Fast restart** (startup.py). Sealed segments are indexed from their index
  files (values are not read); only the segment being written when the process
  stopped is scanned and checked.
- **Eviction** (``max_size``, bytes on disk, dead records included): when over the
  cap, the oldest segment goes whole, after the values in it used since it was
  sealed (up to half a segment of them) were copied to the head of the log: the
  second-chance rule, an approximate LRU. Trade-offs: recency is per segment
  epoch, not exact; overwritten and evicted-elsewhere values keep using disk until
  their segment goes; a copy costs a write; after a restart every value counts as
  unused until touched again (recency lives in memory only).
- **Reads during eviction.** A read holds the segment object, whose map stays valid
  after its file is unlinked (Linux keeps the pages for mappings), so it finishes
  with the right bytes; reads that start after the drop get NotFound.
- **One process per directory** (cas/localfs/directory_lock.py).

Trade-off of reading on the event loop: a value whose page is not in the page
cache is faulted in while the loop waits (one disk read). The store is meant for
small, hot values (CAS blobs under a size threshold, action results); an I/O error
under a map would kill the process (SIGBUS) instead of failing one read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import compress, repeat
from operator import is_
from pathlib import Path

from cas.digest import Digest
from cas.localfs.io_lane import IoLane
from cas.errors import NotFound, ReapiError, ResourceExhausted, Unavailable
from cas.packed.index import Location, PackedIndex
from cas.packed.startup import OpenedDirectory, OpenReport, open_directory
from cas.packed.segments import SEGMENT_SUFFIX, Segment, remove_files
from cas.packed.sizing import DEFAULT_BATCH_BYTES, DEFAULT_MAX_VALUE_SIZE, check_sizes, default_segment_size
from cas.packed.writer import PackedWriter
from cas.store import READ_CHUNK_SIZE, BlobStore, check_read_range

log = logging.getLogger("reapi.cas.packed")

_IO_THREADS = 3  # the writer's one hop at a time, plus seals and unlinks in the background


class PackedStore(BlobStore):
    """Build with ``await PackedStore.open(path, max_bytes, ...)``."""

    def __init__(
        self,
        root: str,
        index: PackedIndex,
        lane: IoLane,
        lock_fd: int,
        *,
        name: str = "packed",
        max_bytes: int,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        segment_size: int,
        fsync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        chunk_size: int = READ_CHUNK_SIZE,
    ) -> None:
        check_sizes(max_bytes, max_value_size, segment_size)
        self.root = root
        self.name = name
        self.max_bytes = max_bytes
        self.max_value_size = max_value_size
        self.segment_size = segment_size
        self.chunk_size = chunk_size
        self._index = index
        self._lane = lane
        self._lock_fd = lock_fd
        self._writer = PackedWriter(
            root, index, lane, segment_size=segment_size, batch_bytes=batch_bytes, fsync=fsync, name=name,
            after_batch=self._evict_if_needed,
        )
        self._closed = False
        self._evicting = False
        self.evicted = 0  # values dropped with their segment
        self.refreshed = 0  # values copied forward to survive an eviction
        self.segments_evicted = 0
        self._on_evicted: Callable[[list[float]], None] | None = None
        self.opened_with = OpenReport()  # what open() found, for logs and tests

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        max_bytes: int,
        name: str = "packed",
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        segment_size: int | None = None,
        fsync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        chunk_size: int = READ_CHUNK_SIZE,
    ) -> PackedStore:
        """Lock the directory, rebuild the index from the segments, and evict down to
        ``max_bytes`` if the cap shrank."""
        segment_size = segment_size or default_segment_size(max_bytes, max_value_size)
        check_sizes(max_bytes, max_value_size, segment_size)
        root = os.path.abspath(os.fspath(path))
        started = time.monotonic()
        opening = asyncio.ensure_future(asyncio.to_thread(open_directory, root, name))
        try:
            opened: OpenedDirectory = await asyncio.shield(opening)
        except BaseException:
            opening.add_done_callback(_release_opened)  # if cancelled, undo once the thread is done
            raise
        executor = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix=f"packed-{name}")
        index = PackedIndex(opened.segments, opened.entries, opened.next_seq)
        store = cls(
            root, index, IoLane(executor, _IO_THREADS, name), opened.lock_fd, name=name, max_bytes=max_bytes,
            max_value_size=max_value_size, segment_size=segment_size, fsync=fsync, batch_bytes=batch_bytes,
            chunk_size=chunk_size,
        )
        store.opened_with = opened.report
        log.info(
            "packed store %r at %s: %d values, %d bytes in %d segments, opened in %.2fs (%s)",
            name, root, len(index), index.total_bytes, len(index.segments), time.monotonic() - started,
            opened.report.notes(),
        )
        store._evict_if_needed()
        return store

    async def drain(self) -> None:
        """Finish queued writes, evictions and background work (seals, unlinks)."""
        await self._writer.drain()
        await self._lane.drain()

    async def aclose(self) -> None:
        """Refuse new writes, finish queued ones, seal the segment being written (so the
        next open reads index files only) and release files and maps."""
        if self._writer.closed:
            return
        self._writer.closed = True
        await self._writer.drain()
        active = self._index.active
        if active is not None:
            try:
                await asyncio.shield(self._writer.seal(active))
            except OSError:
                pass  # logged by the writer; the next open scans the segment instead
        await self._lane.shutdown()
        self._closed = True
        for segment in self._index.segments:
            segment.close_map()
        os.close(self._lock_fd)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        """Bytes of segment files, dead records included: what counts against ``max_bytes``."""
        return self._index.total_bytes

    @property
    def segments(self) -> list[Segment]:
        return list(self._index.segments)

    @property
    def batches_written(self) -> int:
        return self._writer.batches_written

    # -- lookups -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"store {self.name!r} is closed")

    def _lookup(self, digest: Digest) -> Location:
        if self._closed:
            raise Unavailable(f"store {self.name!r} is closed")
        location = self._index.entries.get(digest)
        if location is None:
            raise NotFound(f"{digest} not found in {self.name}")
        location.used = self._index.epoch
        return location

    def _too_large(self, digest: Digest, length: int, at_least: bool = False) -> ResourceExhausted:
        size = f"at least {length}" if at_least else str(length)
        return ResourceExhausted(
            f"{digest}: a value of {size} bytes is over {self.name}'s max_value_size of {self.max_value_size} bytes"
        )

    # -- BlobStore -------------------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        self._check_open()
        # Whole-list passes in C (10,000 digests a call): look up, pick the absent, then
        # mark the present as used (``setattr`` mapped over them; it returns None, so
        # ``any`` runs it to the end).
        locations = list(map(self._index.entries.get, digests))
        missing = set(compress(digests, map(is_, locations, repeat(None))))
        any(map(setattr, filter(None, locations), repeat("used"), repeat(self._index.epoch)))
        return missing

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        location = self._lookup(digest)
        end = check_read_range(digest, location.length, offset, limit)
        segment = location.segment  # held: its map outlives an eviction meanwhile
        base = location.offset
        while offset < end:
            self._check_open()
            size = min(self.chunk_size, end - offset)
            yield segment.value(base + offset, size)
            offset += size

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        parts = []
        length = 0
        async for chunk in chunks:
            length += len(chunk)
            if length > self.max_value_size:
                raise self._too_large(digest, length, at_least=True)
            parts.append(chunk)
        failures = await self.put_many({digest: b"".join(parts)})
        if failures:
            raise failures[digest]

    # -- batches: reads copy out of the maps on the loop, writes join the group commit --------

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        self._check_open()
        entries = self._index.entries
        epoch = self._index.epoch
        found = {}
        for digest in digests:
            location = entries.get(digest)
            if location is not None:
                location.used = epoch
                found[digest] = location.segment.value(location.offset, location.length)
        return found

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        self._check_open()
        entries = self._index.entries
        values = blobs.values()
        # The usual batch, checked in whole-list C passes: all new, all bytes, none too large.
        if (
            not any(map(entries.__contains__, blobs))
            and set(map(type, values)) <= {bytes}
            and max(map(len, values), default=0) <= self.max_value_size
        ):
            return await asyncio.shield(self._writer.put(list(blobs.items()))) if blobs else {}
        failures: dict[Digest, ReapiError] = {}
        items = []
        epoch = self._index.epoch
        for digest, data in blobs.items():
            length = len(data)
            if length > self.max_value_size:
                failures[digest] = self._too_large(digest, length)
                continue
            if type(data) is not bytes:
                data = bytes(data)  # the caller may reuse its buffer before the write runs
            location = entries.get(digest)
            if location is not None and location.length == length and location.segment.value(location.offset, length) == data:
                location.used = epoch  # already stored: a refresh, not a write
                continue
            items.append((digest, data))
        if items:
            failures.update(await asyncio.shield(self._writer.put(items)))
        return failures

    # -- eviction --------------------------------------------------------------------------

    def _evict_if_needed(self) -> None:
        """After each batch: if over the cap, start evicting the oldest segment (one at a
        time; the next starts when this one is done, if still over)."""
        if self._evicting or self._index.total_bytes <= self.max_bytes:
            return
        victim = self._index.oldest_sealed()
        if victim is None:
            return
        self._evicting = True
        copies = self._index.plan_refresh(victim, victim.end // 2)
        self.refreshed += len(copies)
        self._writer.copy(copies)
        self._writer.then(lambda: self._drop(victim))

    def watch_evictions(self, observe: Callable[[list[float]], None]) -> None:
        """Have ``observe`` told, at each eviction, how long each evicted value had gone
        unused (seconds): here, the age of its segment file (values used since were copied forward)."""
        self._on_evicted = observe

    def _drop(self, victim: Segment) -> None:
        """The copies are written: forget the segment and remove its files."""
        dropped = self._index.drop(victim)
        self.evicted += dropped
        if self._on_evicted is not None and dropped:
            try:
                age = max(0.0, time.time() - os.stat(victim.path + SEGMENT_SUFFIX).st_mtime)
            except OSError:
                age = None
            if age is not None:
                self._on_evicted([age] * dropped)
        self.segments_evicted += 1
        sealing = victim.sealing
        if sealing is not None and not sealing.done():
            sealing.add_done_callback(lambda _: self._remove_files(victim))
        else:
            self._remove_files(victim)
        self._evicting = False
        self._evict_if_needed()

    def _remove_files(self, victim: Segment) -> None:
        removing = self._lane.start(remove_files, victim.path)
        removing.add_done_callback(lambda f: _log_removal_failure(self.name, victim, f))


def _log_removal_failure(name: str, segment: Segment, done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("packed store %r: cannot remove evicted %s: %s", name, segment.path, done.exception())


def _release_opened(opening: asyncio.Future[OpenedDirectory]) -> None:
    """Undo an open whose caller went away: unmap the segments and unlock."""
    if opening.cancelled() or opening.exception() is not None:
        return
    opened = opening.result()
    for segment in opened.segments:
        segment.close_map()
    os.close(opened.lock_fd)
