"""PackedWriter: the one appender of a PackedStore; many callers, one write at a time.

**Group commit.** Callers queue their values and wait. While a batch is being
written (in a thread), everything that arrives queues behind it; when it is done,
everything queued so far goes out as the next batch, in one pwritev. A lone
``put_bytes`` costs one thread hop; a thousand concurrent ones cost a few, and a
``put_many`` of a thousand values is one batch. Batches are capped (``batch_bytes``)
so one caller cannot hold the others up for long.

**Order is the truth.** Appends are serialised, and the index is updated from each
batch's completion, in queue order, so the newest write of a key wins in memory
exactly as it does on disk (a scan replays records in file order). That is also
why a refresh copy (eviction moving a recently used value forward) reads its
bytes only when its batch is formed: it is skipped if the key was rewritten
meanwhile, so a stale copy can never land after a newer value.

**Failures.** A failed append is cut back off the file (no partial batch stays),
its values' callers get the error (RESOURCE_EXHAUSTED for a full disk), and the
segment is sealed as it was; the next batch starts a new segment.

Everything here except the thread functions runs on the event loop in plain
callbacks, so the queue, the index and the segments' ends need no locks.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from cas.digest import Digest
from cas.localfs.files import as_store_error
from cas.localfs.io_lane import IoLane
from cas.errors import Internal, ReapiError, Unavailable
from cas.packed.format import BATCH_HEADER, RECORD_HEADER, SEGMENT_HEADER, encode_records, frame_batch
from cas.packed.index import Location, PackedIndex
from cas.packed.segments import Segment, remove_files

log = logging.getLogger("reapi.cas.packed")

Failures = dict[Digest, ReapiError]


@dataclass(eq=False)
class _Job:
    """Values from one caller (``future`` set), refresh copies (``copies``), or an
    action to run once everything queued before it is written (``action``)."""

    items: Sequence[tuple[Digest, bytes]] = ()
    copies: Sequence[tuple[Digest, Location]] = ()
    action: Callable[[], None] | None = None
    future: asyncio.Future[Failures] | None = None
    failures: Failures = field(default_factory=dict)
    cursor: int = 0  # next item (or copy) not yet taken into a batch
    unfinished: int = 0  # items taken or not, not yet written or failed
    items_size: int = 0  # record bytes of all the items, to take them whole when they fit

    @property
    def remaining(self) -> int:
        return len(self.copies or self.items) - self.cursor

    def finish(self, count: int) -> None:
        self.unfinished -= count
        if self.unfinished == 0 and self.future is not None and not self.future.done():
            self.future.set_result(self.failures)


@dataclass(eq=False)
class _Batch:
    segment: Segment
    create: bool  # the batch starts a new segment
    offset: int
    values: list[tuple[Digest, bytes]] = field(default_factory=list)
    # Each value's source location if it is a refresh copy; None while the batch has none.
    copied: list[Location | None] | None = None
    taken: list[tuple[_Job, int]] = field(default_factory=list)  # jobs and how many values of each, in order
    size: int = BATCH_HEADER.size  # bytes the batch adds to the segment, header included
    offsets: list[int] = field(default_factory=list)  # of each value, once encoded
    lengths: list[int] = field(default_factory=list)


class PackedWriter:
    def __init__(
        self,
        root: str,
        index: PackedIndex,
        lane: IoLane,
        *,
        segment_size: int,
        batch_bytes: int,
        fsync: bool,
        name: str,
        after_batch: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = root
        self.index = index
        self.lane = lane
        self.segment_size = segment_size
        self.batch_bytes = batch_bytes
        self.fsync = fsync
        self.name = name
        self.after_batch = after_batch  # the store's eviction check
        self.closed = False
        self.batches_written = 0
        self._queue: deque[_Job] = deque()
        self._writing = False
        self._pumping = False
        self._idle: asyncio.Future[None] | None = None

    # -- what the store calls ----------------------------------------------------------

    def put(self, items: Sequence[tuple[Digest, bytes]]) -> asyncio.Future[Failures]:
        """Queue values; the future gives the failures by digest once all are written."""
        if self.closed:
            raise Unavailable(f"store {self.name!r} is closed")
        future: asyncio.Future[Failures] = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result({})
            return future
        size = RECORD_HEADER.size * len(items) + sum(len(d.hash) // 2 + len(v) for d, v in items)
        self._queue.append(_Job(items=items, future=future, unfinished=len(items), items_size=size))
        self._pump()
        return future

    def copy(self, copies: Sequence[tuple[Digest, Location]]) -> None:
        """Queue refresh copies of values to the head of the log (for eviction)."""
        if not copies:
            return
        self._queue.append(_Job(copies=copies))
        self._pump()

    def then(self, action: Callable[[], None]) -> None:
        """Run ``action`` once everything queued so far is written."""
        self._queue.append(_Job(action=action))
        self._pump()

    async def drain(self) -> None:
        """Wait until the queue is empty and no batch is being written."""
        while self._writing or self._queue:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def seal(self, segment: Segment) -> asyncio.Future[None]:
        """Stop appending to ``segment`` and seal it in the background."""
        self.index.stop_appending(segment)
        future = self.lane.start(segment.seal_file, segment.end, segment.keys, segment.offsets, segment.lengths)
        segment.sealing = future
        future.add_done_callback(lambda f: self._log_seal_failure(segment, f))
        return future

    # -- forming and writing batches ---------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return  # called from an action run below: the loop here picks up what it queued
        self._pumping = True
        try:
            self._pump_queue()
        finally:
            self._pumping = False

    def _pump_queue(self) -> None:
        while not self._writing and self._queue:
            head = self._queue[0]
            if head.action is not None:
                self._queue.popleft()
                head.action()
                continue
            batch, parts = self._form_batch()
            if batch is None:
                continue  # only stale copies were at the head
            self._writing = True
            writing = self.lane.start(_write_batch, batch.segment, batch.create, parts, batch.offset, self.fsync)
            writing.add_done_callback(functools.partial(self._finish, batch))
        if not self._writing and not self._queue and self._idle is not None:
            self._idle.set_result(None)
            self._idle = None

    def _first_value(self, job: _Job) -> tuple[Digest, bytes] | None:
        """The job's next value to write; stale copies at its head are passed over."""
        entries = self.index.entries
        while job.cursor < len(job.copies):
            digest, location = job.copies[job.cursor]
            if entries.get(digest) is location:
                return digest, location.segment.value(location.offset, location.length)
            job.cursor += 1
        if job.cursor < len(job.items):
            return job.items[job.cursor]
        return None

    def _form_batch(self) -> tuple[_Batch | None, list[bytes]]:
        """Take queued values (up to a barrier) that fit one batch into one segment."""
        first = self._first_value(self._queue[0])
        if first is None:
            self._queue.popleft()
            return None, []
        first_size = _record_size(*first)
        segment = self.index.active
        create = segment is None or BATCH_HEADER.size + first_size > segment.room
        if create:
            segment = self.index.new_segment(self.root, self.segment_size)
            offset = SEGMENT_HEADER.size
            room = self.segment_size - offset
        else:
            assert segment is not None
            offset = segment.end
            room = segment.room
        limit = min(room, max(self.batch_bytes, BATCH_HEADER.size + first_size))
        batch = _Batch(segment, create, offset)
        taken_keys: set[Digest] | None = None  # made when the first copy job is reached
        while self._queue:
            job = self._queue[0]
            if job.action is not None:
                break
            before = len(batch.values)
            if job.copies:
                if taken_keys is None:
                    taken_keys = {d for d, _ in batch.values}
                self._take_copies(job, batch, limit, taken_keys)
            else:
                self._take_items(job, batch, limit)
                if taken_keys is not None:
                    taken_keys.update(d for d, _ in batch.values[before:])
            if len(batch.values) > before:
                batch.taken.append((job, len(batch.values) - before))
            if job.remaining:
                break  # the batch is full
            self._queue.popleft()
        if not batch.values:
            return None, []
        parts, batch.offsets, batch.lengths = encode_records(batch.values, offset + BATCH_HEADER.size)
        return batch, parts

    @staticmethod
    def _take_items(job: _Job, batch: _Batch, limit: int) -> None:
        """As many of the job's values as fit; all of them at once when they do."""
        items = job.items
        start = job.cursor
        if start == 0 and batch.size + job.items_size <= limit:
            end, batch.size = len(items), batch.size + job.items_size
        else:
            end, size = start, batch.size
            while end < len(items):
                added = _record_size(*items[end])
                if size + added > limit:
                    break
                size += added
                end += 1
            batch.size = size
        batch.values += items[start:end]
        if batch.copied is not None:
            batch.copied += [None] * (end - start)
        job.cursor = end

    def _take_copies(self, job: _Job, batch: _Batch, limit: int, taken_keys: set[Digest]) -> None:
        """The job's copies that fit and are still current: not rewritten by an earlier
        batch (the index says so) nor earlier in this one (``taken_keys``)."""
        if batch.copied is None:
            batch.copied = [None] * len(batch.values)
        entries = self.index.entries
        while job.cursor < len(job.copies):
            digest, location = job.copies[job.cursor]
            if entries.get(digest) is location and digest not in taken_keys:
                data = location.segment.value(location.offset, location.length)
                size = _record_size(digest, data)
                if batch.size + size > limit:
                    return
                batch.size += size
                batch.values.append((digest, data))
                batch.copied.append(location)
                taken_keys.add(digest)
            job.cursor += 1

    def _finish(self, batch: _Batch, done: asyncio.Future[None]) -> None:
        """Apply a written batch to the index (or hand its error to its callers)."""
        self._writing = False
        error = None if done.cancelled() else done.exception()
        segment = batch.segment
        if error is None:
            self.batches_written += 1
            if batch.create:
                old = self.index.active
                if old is not None:
                    self.seal(old)
                self.index.add_segment(segment)
            self.index.grew(segment, batch.size)
            keys = [digest for digest, _ in batch.values]
            segment.add_records(keys, batch.offsets, batch.lengths)
            self._index_values(segment, keys, batch)
        else:
            failure = self._as_failure(error, segment)
            if not batch.create:
                self.seal(segment)  # cut back in the thread; no more appends to it
            values = iter(batch.values)
            for job, count in batch.taken:
                for _, (digest, _) in zip(range(count), values):
                    job.failures[digest] = failure
        for job, count in batch.taken:
            job.finish(count)
        self.after_batch()
        self._pump()

    def _index_values(self, segment: Segment, keys: list[Digest], batch: _Batch) -> None:
        entries = self.index.entries
        epoch = segment.seq
        if batch.copied is None:  # the usual case: new values only, in one C-level pass
            entries.update(zip(keys, map(Location, repeat(segment), batch.offsets, batch.lengths, repeat(epoch))))
            return
        for digest, offset, length, source in zip(keys, batch.offsets, batch.lengths, batch.copied):
            if source is None:
                entries[digest] = Location(segment, offset, length, epoch)
            elif entries.get(digest) is source:  # a copy keeps its recency; a rewritten key keeps its new value
                entries[digest] = Location(segment, offset, length, source.used)

    def _as_failure(self, error: BaseException, segment: Segment) -> ReapiError:
        if isinstance(error, OSError):
            return as_store_error(self.name, error, "append to", segment.path + ".seg")
        if isinstance(error, ReapiError):
            return error
        log.error("packed store %r: append failed: %r", self.name, error)
        return Internal(f"{self.name}: append failed: {error!r}")

    def _log_seal_failure(self, segment: Segment, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            # The segment stays readable; the next open scans it instead of reading its index.
            error = done.exception()
            full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
            log.log(logging.WARNING if full else logging.ERROR, "packed store %r: sealing %s failed: %s",
                    self.name, segment.path, error)


def _record_size(digest: Digest, data: bytes) -> int:
    """Bytes of the record holding ``data`` (format.encode_records)."""
    return RECORD_HEADER.size + len(digest.hash) // 2 + len(data)


def _write_batch(segment: Segment, create: bool, parts: list[bytes], offset: int, fsync: bool) -> None:
    """In a thread: make the segment's file if it is new, then frame and write the batch."""
    if create:
        segment.create_file(fsync)
    try:
        segment.append_file(frame_batch(parts, segment.seq, offset), offset, fsync)
    except BaseException:
        if create:  # nothing of it reached the index: take it away whole
            os.close(segment.fd)
            segment.fd = -1
            segment.close_map()
            segment.writable = False
            remove_files(segment.path)
        raise
