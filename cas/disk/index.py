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


@dataclass(slots=True)
class IndexEntry:
    length: int
    # Last access recorded (or queued to be recorded) as the file's mtime, in clock seconds.
    stamp: float


class DiskIndex:
    def __init__(self, entries: OrderedDict[Digest, IndexEntry], touch_interval: float) -> None:
        self._entries = entries  # oldest access first
        self.touch_interval = touch_interval
        self.total_bytes = sum(e.length for e in entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: Digest) -> IndexEntry | None:
        return self._entries.get(digest)

    def entries(self) -> list[tuple[Digest, IndexEntry]]:
        """A copy of the entries, oldest access first."""
        return list(self._entries.items())

    def __iter__(self) -> Iterator[Digest]:
        return iter(self._entries)

    def hit(self, digest: Digest, entry: IndexEntry, now: float) -> bool:
        """Make ``digest`` the most recently used. True when its recorded access time
        is older than ``touch_interval``, so the caller should persist ``now``."""
        self._entries.move_to_end(digest)
        if now - entry.stamp >= self.touch_interval:
            entry.stamp = now
            return True
        return False

    def hit_many(self, digests: Iterable[Digest], now: float) -> tuple[set[Digest], list[tuple[Digest, IndexEntry]]]:
        """``hit`` for a whole request: the absent digests, and the present ones whose
        access time should be persisted. One tight loop, because FindMissingBlobs
        sends 10,000 digests and per-digest method calls dominated its cost."""
        entries = self._entries
        get, move_to_end = entries.get, entries.move_to_end
        stale_before = now - self.touch_interval
        missing: set[Digest] = set()
        stale: list[tuple[Digest, IndexEntry]] = []
        for digest in digests:
            entry = get(digest)
            if entry is None:
                missing.add(digest)
                continue
            move_to_end(digest)
            if entry.stamp <= stale_before:
                entry.stamp = now
                stale.append((digest, entry))
        return missing, stale

    def insert(self, digest: Digest, length: int, now: float) -> None:
        """Record a value just put in place (replacing any older value of the key)."""
        old = self._entries.pop(digest, None)
        if old is not None:
            self.total_bytes -= old.length
        self._entries[digest] = IndexEntry(length, now)
        self.total_bytes += length

    def forget(self, digest: Digest, entry: IndexEntry) -> None:
        """Drop ``entry`` (its file is gone or damaged), unless the key was rewritten since."""
        if self._entries.get(digest) is entry:
            del self._entries[digest]
            self.total_bytes -= entry.length

    def take_oldest(self, max_bytes: int, may_take: Callable[[Digest], bool]) -> list[tuple[Digest, IndexEntry]]:
        """Remove and return the least recently used entries until the total is at most
        ``max_bytes``, skipping keys ``may_take`` refuses (those being written)."""
        excess = self.total_bytes - max_bytes
        if excess <= 0:
            return []
        victims = []
        for digest, entry in self._entries.items():
            if excess <= 0:
                break
            if may_take(digest):
                victims.append((digest, entry))
                excess -= entry.length
        for digest, entry in victims:
            del self._entries[digest]
            self.total_bytes -= entry.length
        return victims
