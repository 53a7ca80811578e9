"""Opening a PackedStore's directory: lock, layout check, and the index rebuilt from its segments.

Runs in a thread and returns plain values the store's constructor takes. Per
segment, oldest first:
- a segment with a valid index file (written when it was sealed, after its data
  was flushed) is mapped and its records taken from that file, without reading
  the values;
- a segment without one (the one being written when the process stopped, or one
  whose index file is damaged) is scanned: every batch's checksums are checked,
  damaged batches are skipped and a torn tail is cut off. It is then sealed
  (flushed, index file written), so the next open need not scan it again; on a
  full disk without the index file, which the next open writes instead;
- an empty or unreadable segment, an index file without its segment and a
  leftover temp file are removed.
Later records win, so replaying segments in order gives each key its newest value.
New writes always start a new segment.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from dataclasses import dataclass, field
from itertools import repeat

from cas.digest import Digest
from cas.localfs.directory_lock import claim_layout, lock_directory
from cas.disk.layout import LAYOUT_MARKER as DISK_LAYOUT_MARKER
from cas.disk.layout import gc_paused
from cas.errors import FailedPrecondition
from cas.packed.format import SEGMENT_HEADER, BadSegment, scan_segment
from cas.packed.index import Location
from cas.packed.index_file import encode_index, read_index_file, write_index_file
from cas.packed.segments import INDEX_SUFFIX, SEGMENT_SUFFIX, Segment, parse_segment_name, remove_files, segment_name

log = logging.getLogger("reapi.cas.packed")

LAYOUT_MARKER = ".reapi-packed-store"
LAYOUT_VERSION = "reapi packed store layout 1\n"


@dataclass
class OpenReport:
    """What opening found, for the log line."""

    from_index_files: int = 0
    scanned: int = 0
    damaged_batches: int = 0
    torn_tails: int = 0
    removed: list[str] = field(default_factory=list)

    def notes(self) -> str:
        parts = [
            f"{self.from_index_files} segments from index files",
            f"{self.scanned} scanned" if self.scanned else "",
            f"{self.damaged_batches} damaged batches skipped" if self.damaged_batches else "",
            f"{self.torn_tails} torn tails cut off" if self.torn_tails else "",
            f"{len(self.removed)} files removed" if self.removed else "",
        ]
        return "; ".join(p for p in parts if p)


@dataclass
class OpenedDirectory:
    lock_fd: int
    segments: list[Segment]
    entries: dict[Digest, Location]
    next_seq: int
    report: OpenReport


def check_layout(root: str, name: str) -> None:
    """Mark a new directory as ours; refuse one holding another layout (a disk store's)."""
    if os.path.exists(os.path.join(root, DISK_LAYOUT_MARKER)):
        raise FailedPrecondition(
            f"packed store {name!r}: {root} holds a disk store (one file per value); "
            "point the packed store at another directory"
        )
    claim_layout(root, LAYOUT_MARKER, LAYOUT_VERSION, f"packed store {name!r}")


def open_directory(root: str, name: str) -> OpenedDirectory:
    lock_fd = lock_directory(root, f"packed store {name!r}")
    segments: list[Segment] = []
    try:
        check_layout(root, name)
        report = OpenReport()
        seqs = _list_segments(root, report)
        with gc_paused():  # many small objects: the cyclic collector would rescan them again and again
            for seq in seqs:
                segment = _load_segment(root, seq, report)
                if segment is not None:
                    segments.append(segment)
            entries = _replay(segments)
    except BaseException:
        for segment in segments:
            segment.close_map()
        os.close(lock_fd)
        raise
    return OpenedDirectory(lock_fd, segments, entries, (max(seqs) + 1) if seqs else 1, report)


def _list_segments(root: str, report: OpenReport) -> list[int]:
    """Sequence numbers of the segment files, ascending; strays removed."""
    segments: set[int] = set()
    indexes: set[int] = set()
    for name in os.listdir(root):
        parsed = parse_segment_name(name)
        if name.endswith(INDEX_SUFFIX + ".tmp"):
            os.unlink(os.path.join(root, name))
            report.removed.append(name)
        elif parsed is not None:
            (segments if parsed[1] == SEGMENT_SUFFIX else indexes).add(parsed[0])
    for seq in indexes - segments:  # its segment was evicted (or lost) before it
        os.unlink(os.path.join(root, segment_name(seq) + INDEX_SUFFIX))
        report.removed.append(segment_name(seq) + INDEX_SUFFIX)
    return sorted(segments)


def _load_segment(root: str, seq: int, report: OpenReport) -> Segment | None:
    base = os.path.join(root, segment_name(seq))
    fd = os.open(base + SEGMENT_SUFFIX, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        records = read_index_file(base + INDEX_SUFFIX, seq)
        if records is not None and records.end == size:
            report.from_index_files += 1
            return Segment.from_records(root, seq, records, _map(fd, size))
        if size < SEGMENT_HEADER.size:
            raise BadSegment(f"{size} bytes, shorter than a segment header")
        mm = _map(fd, size)
        try:
            records = scan_segment(mm, seq, size)
        except BaseException:
            mm.close()
            raise
        report.scanned += 1
        report.damaged_batches += records.damaged_batches
        if not records.keys:
            mm.close()
            remove_files(base)
            report.removed.append(segment_name(seq) + SEGMENT_SUFFIX)
            return None
        if records.torn_tail:
            log.warning("packed store: %s: cut off %d bytes after the last whole batch (a crash?)",
                        base + SEGMENT_SUFFIX, size - records.end)
            report.torn_tails += 1
        if records.end < size:
            os.ftruncate(fd, records.end)
        try:
            os.fdatasync(fd)
            write_index_file(base + INDEX_SUFFIX,
                             encode_index(seq, records.end, records.keys, records.offsets, records.lengths))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The index file only spares the next open this scan: on a full disk the
            # store opens without it (and serves reads) rather than not at all.
            log.warning("packed store: no space to write %s (%s); the segment will be scanned again at the next "
                        "open", base + INDEX_SUFFIX, exc.strerror)
        return Segment.from_records(root, seq, records, mm)
    except BadSegment as err:
        log.warning("packed store: removing %s: %s", base + SEGMENT_SUFFIX, err)
        remove_files(base)
        report.removed.append(segment_name(seq) + SEGMENT_SUFFIX)
        return None
    finally:
        os.close(fd)


def _map(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)


def _replay(segments: list[Segment]) -> dict[Digest, Location]:
    """Every key's newest record; an entry's ``used`` starts as its segment's number."""
    entries: dict[Digest, Location] = {}
    for segment in segments:  # in order, and records in order: later ones overwrite earlier ones
        entries.update(zip(
            segment.keys,
            map(Location, repeat(segment), segment.offsets, segment.lengths, repeat(segment.seq)),
        ))
    return entries
