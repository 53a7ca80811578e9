"""DiskIndex: what a DiskStore holds, in least-recently-used order, with its byte count.

All in memory and touched only on the event loop, in plain methods that never
await, so it needs no locks. ``find_missing`` is answered from here alone. The
files on disk are the truth; this mirrors them: an entry is added only after its
file is in place and removed before its file is unlinked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cas.digest import Digest
from cas.lru import Lru


@dataclass(slots=True)
class IndexEntry:
    length: int
    # Last access recorded (or queued to be recorded) as the file's mtime, in clock seconds.
    stamp: float


class DiskIndex:
    def __init__(self, entries: OrderedDict[Digest, IndexEntry], touch_interval: float) -> None:
        self._lru: Lru[Digest, IndexEntry] = Lru(_length, entries)  # adopted, oldest access first
        self.touch_interval = touch_interval

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def total_bytes(self) -> int:
        return self._lru.total

    def get(self, digest: Digest) -> IndexEntry | None:
        """The entry, without counting as an access."""
        return self._lru.peek(digest)

    def entries(self) -> list[tuple[Digest, IndexEntry]]:
        """A copy of the entries, oldest access first."""
        return list(self._lru.items())

    def __iter__(self) -> Iterator[Digest]:
        return iter(self._lru)

    def hit(self, digest: Digest, entry: IndexEntry, now: float) -> bool:
        """Make ``digest`` the most recently used. True when its recorded access time
        is older than ``touch_interval``, so the caller should persist ``now``."""
        self._lru.get(digest)
        if now - entry.stamp >= self.touch_interval:
            entry.stamp = now
            return True
        return False

    def hit_many(self, digests: Iterable[Digest], now: float) -> tuple[set[Digest], list[tuple[Digest, IndexEntry]]]:
        """``hit`` for a whole request: the absent digests, and the present ones whose
        access time should be persisted. One tight loop, because FindMissingBlobs
        sends 10,000 digests and per-digest method calls dominated its cost."""
        peek, refresh = self._lru.accessors()
        stale_before = now - self.touch_interval
        missing: set[Digest] = set()
        stale: list[tuple[Digest, IndexEntry]] = []
        for digest in digests:
            entry = peek(digest)
            if entry is None:
                missing.add(digest)
                continue
            refresh(digest)
            if entry.stamp <= stale_before:
                entry.stamp = now
                stale.append((digest, entry))
        return missing, stale

    def insert(self, digest: Digest, length: int, now: float) -> None:
        """Record a value just put in place (replacing any older value of the key)."""
        self._lru.put(digest, IndexEntry(length, now))

    def forget(self, digest: Digest, entry: IndexEntry) -> None:
        """Drop ``entry`` (its file is gone or damaged), unless the key was rewritten since."""
        if self._lru.peek(digest) is entry:
            self._lru.pop(digest)

    def take_oldest(self, max_bytes: int, may_take: Callable[[Digest], bool]) -> list[tuple[Digest, IndexEntry]]:
        """Remove and return the least recently used entries until the total is at most
        ``max_bytes``, skipping keys ``may_take`` refuses (those being written)."""
        return self._lru.evict(max_bytes, may_take)


def _length(entry: IndexEntry) -> int:
    return entry.length
