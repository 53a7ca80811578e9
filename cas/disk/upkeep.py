"""DiskUpkeep: keeps a DiskStore's files in step with its index, off the request path.

Three kinds of work follow from what requests do, and none of it should make a
request wait:

- **Access times.** A hit makes its value the newest in memory at once; on disk
  it queues a utime (mtime := now) when the recorded time is older than
  ``touch_interval``, and the queue goes to a thread in one batch per loop turn.
  That is what lets a scan after a crash order values by recency.
- **Eviction.** After each write, the least recently used values go until the total
  is under the cap. A key being written is skipped (its KeyLocks entry is
  held); a victim's key stays locked until its file is unlinked, so a writer cannot
  rename a new value into place only to see it unlinked.
- **Damaged values** found by a read are forgotten and removed.

All of it runs in the store's IoLane as background work, tracked so ``drain`` and
``aclose`` wait for it; failures are logged, since no request is waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from cas.digest import Digest
from cas.disk.index import DiskIndex, IndexEntry
from cas.disk.key_locks import KeyLocks
from cas.disk.layout import value_path
from cas.localfs import files as disk_files
from cas.localfs.files import CorruptValue
from cas.localfs.io_lane import IoLane

log = logging.getLogger("reapi.cas.disk")


class DiskUpkeep:
    def __init__(self, root: str, name: str, index: DiskIndex, lane: IoLane, locks: KeyLocks) -> None:
        self.root = root
        self.name = name
        self._index = index
        self._lane = lane
        self._locks = locks
        self._touch_queue: dict[Digest, tuple[str, float]] = {}  # path, access time
        self.evicted = 0
        # Told the last access time (clock seconds) of every value evicted (metrics).
        self.on_evicted: Callable[[list[float]], None] | None = None

    # -- access times ----------------------------------------------------------------

    def hit(self, digest: Digest, entry: IndexEntry, now: float) -> None:
        """Mark a hit: newest in memory now, on disk lazily."""
        if self._index.hit(digest, entry, now):
            self._queue_touch(digest, entry, now)

    def hit_many(self, digests: Iterable[Digest], now: float) -> set[Digest]:
        """``hit`` for every present digest; return the absent ones."""
        missing, stale = self._index.hit_many(digests, now)
        for digest, entry in stale:
            self._queue_touch(digest, entry, now)
        return missing

    def _queue_touch(self, digest: Digest, entry: IndexEntry, now: float) -> None:
        """Persist ``now`` as the value's access time soon, in a batch, off the loop."""
        if not self._touch_queue:
            asyncio.get_running_loop().call_soon(self.flush_touches)
        self._touch_queue[digest] = (value_path(self.root, digest, entry.length), now)

    def flush_touches(self) -> None:
        if not self._touch_queue:
            return
        touches = list(self._touch_queue.values())
        self._touch_queue.clear()
        self._lane.start(disk_files.touch_files, touches).add_done_callback(self._log_failures("refresh"))

    # -- removals ----------------------------------------------------------------------

    def evict_if_needed(self, max_bytes: int) -> None:
        """Remove the least recently used values until under ``max_bytes``. Keys being
        written are skipped; the victims' keys stay locked until their files are gone."""
        victims = self._index.take_oldest(max_bytes, self._locks.try_acquire)
        if not victims:
            return
        self.evicted += len(victims)
        if self.on_evicted is not None:
            self.on_evicted([entry.stamp for _, entry in victims])
        paths = [value_path(self.root, d, e.length) for d, e in victims]
        future = self._lane.start(disk_files.remove_files, paths)
        future.add_done_callback(lambda _: self._locks.release_all(d for d, _ in victims))
        future.add_done_callback(self._log_failures("evict"))

    def drop_corrupt(self, digest: Digest, entry: IndexEntry, error: CorruptValue) -> None:
        log.warning("disk store %r: dropping damaged value %s: %s", self.name, digest, error)
        self._index.forget(digest, entry)
        if self._locks.try_acquire(digest):  # else a writer is replacing it right now
            future = self._lane.start(disk_files.remove_files, [value_path(self.root, digest, entry.length)])
            future.add_done_callback(lambda _: self._locks.release(digest))

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
