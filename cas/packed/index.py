"""PackedIndex: where each value of a PackedStore lives, and which segments exist.

All in memory, touched only on the event loop in plain (non-async) methods, so
it needs no locks. ``find_missing`` is answered from here alone.

**Recency without an LRU list.** Each entry records ``used``: the epoch (the
sequence number of the segment being written) at its last write or access; a hit
costs one attribute store. A segment's age is its place in the log, so when the
oldest segment must go, an entry in it is *recently used* if it was touched after
that segment stopped being the newest (``used > segment.seq``): the second-chance
(CLOCK) rule, with the log as the clock hand. Those entries are copied to the head
of the log before the segment is dropped; the rest go with it. See
``plan_refresh`` for the bound that keeps eviction making progress.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from cas.digest import Digest
from cas.packed.segments import Segment


@dataclass(slots=True, eq=False)
class Location:
    segment: Segment
    offset: int  # of the value in the segment
    length: int
    used: int  # epoch of the last write or access


class PackedIndex:
    def __init__(self, segments: list[Segment], entries: dict[Digest, Location], next_seq: int) -> None:
        self.entries = entries
        self.segments: deque[Segment] = deque(segments)  # oldest first
        self.total_bytes = sum(s.end for s in segments)  # on disk, dead records included
        self.next_seq = next_seq
        # What a hit records as ``used``: the segment being written, or the next one
        # when none is (just opened): either way newer than every sealed segment.
        self.epoch = next_seq

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def active(self) -> Segment | None:
        """The segment taking appends, if any."""
        if self.segments and self.segments[-1].writable:
            return self.segments[-1]
        return None

    def new_segment(self, root: str, capacity: int) -> Segment:
        """A segment object for the next sequence number (its file is made by the writer)."""
        segment = Segment(root, self.next_seq, capacity)
        self.next_seq += 1
        return segment

    def add_segment(self, segment: Segment) -> None:
        self.segments.append(segment)
        self.total_bytes += segment.end
        self.epoch = segment.seq

    def stop_appending(self, segment: Segment) -> None:
        """``segment`` takes no more appends (full, or a write to it failed)."""
        segment.writable = False
        if self.epoch == segment.seq:
            self.epoch = self.next_seq

    def grew(self, segment: Segment, added: int) -> None:
        segment.end += added
        self.total_bytes += added

    def oldest_sealed(self) -> Segment | None:
        if self.segments and not self.segments[0].writable:
            return self.segments[0]
        return None

    def live_records(self, segment: Segment) -> Iterator[tuple[Digest, Location]]:
        """The entries whose current value is in ``segment``."""
        entries = self.entries
        for digest, offset in zip(segment.keys, segment.offsets):
            location = entries.get(digest)
            if location is not None and location.segment is segment and location.offset == offset:
                yield digest, location

    def plan_refresh(self, victim: Segment, budget: int) -> list[tuple[Digest, Location]]:
        """The recently used entries of ``victim`` to copy forward before it is dropped,
        most recently used first, at most ``budget`` bytes of them.

        The budget (half a segment, from the store) is what guarantees progress: if
        more than that was used recently, the working set is larger than the store,
        something has to go, and each eviction still frees at least half a segment.
        """
        recent = [(loc.used, digest, loc) for digest, loc in self.live_records(victim) if loc.used > victim.seq]
        recent.sort(key=_newest_first)
        chosen = []
        for _, digest, location in recent:
            if location.length > budget:
                break
            budget -= location.length
            chosen.append((digest, location))
        return chosen

    def drop(self, segment: Segment) -> int:
        """Forget ``segment`` and every value still in it; return how many values went."""
        gone = [digest for digest, _ in self.live_records(segment)]
        for digest in gone:
            del self.entries[digest]
        self.segments.remove(segment)
        self.total_bytes -= segment.end
        return len(gone)


def _newest_first(item: tuple[int, Digest, Location]) -> int:
    return -item[0]
