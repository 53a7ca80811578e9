"""Segment: one file of a PackedStore, written by appending, read through a memory map.

    root/
      .reapi-packed-store        marker holding the layout version
      .lock                      flock held by the one process using the store
      000000000000002a.seg       segment 42: header, then batches (format.py)
      000000000000002a.idx       its index file, once sealed (index_file.py)

Life of a segment: **created** sparse at its full capacity and mapped whole, so
reads of anything appended are plain memory copies (the page cache is shared, so
bytes written with pwrite are visible through the map at once); **appended** to,
one batch at a time, by the store's writer; **sealed** when full: flushed to disk,
cut to its used length, index file written; **dropped** whole by eviction: the
index forgets it, the files are unlinked, and the map lives on for as long as a
reader still holds it (Linux keeps an unlinked file's pages for its mappings).

Methods named ``*_file`` block, and run in the store's threads.
"""

from __future__ import annotations

import array
import asyncio
import mmap
import os
from collections.abc import Sequence

from cas.digest import Digest
from cas.localfs.files import fsync_dir
from cas.packed.format import SEGMENT_HEADER, SegmentRecords, segment_header
from cas.packed.index_file import encode_index, write_index_file

SEGMENT_SUFFIX = ".seg"
INDEX_SUFFIX = ".idx"


def segment_name(seq: int) -> str:
    return f"{seq:016x}"


def parse_segment_name(name: str) -> tuple[int, str] | None:
    """(seq, suffix) of a file name this store made, else None."""
    stem, dot, suffix = name.partition(".")
    if len(stem) != 16 or stem.strip("0123456789abcdef") or f".{suffix}" not in (SEGMENT_SUFFIX, INDEX_SUFFIX):
        return None
    return int(stem, 16), f".{suffix}"


class Segment:
    """One segment file: its map, how far it is written, and the records it holds."""

    __slots__ = ("seq", "path", "capacity", "end", "fd", "mm", "keys", "offsets", "lengths", "sealing", "writable")

    def __init__(self, root: str, seq: int, capacity: int) -> None:
        self.seq = seq
        self.path = os.path.join(root, segment_name(seq))
        self.capacity = capacity  # bytes mapped; appends never pass it
        self.end = 0  # bytes written (0 until the file exists)
        self.fd = -1  # open while the segment takes appends
        self.mm: mmap.mmap | None = None
        # Every record appended, in order (dead ones too: the index says which are live).
        self.keys: list[Digest] = []
        self.offsets = array.array("I")  # segments are at most 1 GiB
        self.lengths = array.array("I")
        self.sealing: asyncio.Future[None] | None = None
        self.writable = False

    def __repr__(self) -> str:
        return f"Segment({self.seq}, end={self.end})"

    @property
    def room(self) -> int:
        return self.capacity - self.end if self.writable else 0

    def value(self, offset: int, length: int) -> bytes:
        assert self.mm is not None
        return self.mm[offset : offset + length]

    def add_records(self, keys: Sequence[Digest], offsets: Sequence[int], lengths: Sequence[int]) -> None:
        self.keys += keys
        self.offsets.extend(offsets)
        self.lengths.extend(lengths)

    @classmethod
    def from_records(cls, root: str, seq: int, records: SegmentRecords, mm: mmap.mmap) -> Segment:
        """A sealed segment found at open."""
        segment = cls(root, seq, len(mm))
        segment.mm = mm
        segment.end = records.end
        segment.add_records(records.keys, records.offsets, records.lengths)
        return segment

    # -- blocking file work, in a thread ------------------------------------------------

    def create_file(self, fsync: bool) -> None:
        """Create the file sparse at full capacity, write its header and map it."""
        fd = os.open(self.path + ".seg", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, self.capacity)
            write_all_at(fd, [segment_header(self.seq)], 0)
            if fsync:
                os.fdatasync(fd)
                fsync_dir(os.path.dirname(self.path))
            self.mm = mmap.mmap(fd, self.capacity, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            remove_files(self.path)
            raise
        self.fd = fd
        self.end = SEGMENT_HEADER.size
        self.writable = True

    def append_file(self, buffers: Sequence[bytes], offset: int, fsync: bool) -> None:
        """Write one batch at ``offset``. On failure, cut the file back to ``offset``
        so no partial batch stays behind, and re-raise."""
        try:
            write_all_at(self.fd, buffers, offset)
            if fsync:
                os.fdatasync(self.fd)
        except BaseException:
            try:
                os.ftruncate(self.fd, offset)
            except OSError:
                pass  # the scan at the next open drops what fails its checksum
            raise

    def seal_file(self, end: int, keys: Sequence[Digest], offsets: Sequence[int], lengths: Sequence[int]) -> None:
        """Flush the data, cut the file to ``end`` and write the index file. The flush
        comes first whatever the fsync setting: the index file vouches for the data."""
        fd = self.fd
        self.fd = -1
        try:
            os.fdatasync(fd)
            os.ftruncate(fd, end)
        finally:
            os.close(fd)
        write_index_file(self.path + INDEX_SUFFIX, encode_index(self.seq, end, keys, offsets, lengths))

    def close_map(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass  # a reader still holds a view; the map goes when it does
            self.mm = None


def write_all_at(fd: int, buffers: Sequence[bytes], offset: int) -> None:
    """pwritev every buffer at ``offset``, finishing short writes (rare: a signal, a full disk)."""
    written = os.pwritev(fd, buffers, offset)
    total = sum(map(len, buffers))
    if written < total:
        rest = memoryview(b"".join(buffers))[written:]
        offset += written
        while rest:
            n = os.pwrite(fd, rest, offset)
            rest = rest[n:]
            offset += n


def remove_files(path: str) -> None:
    """Unlink a segment and its index file (segment first: an index file without its
    segment is ignored and removed at open, a segment without one is scanned)."""
    for suffix in (SEGMENT_SUFFIX, INDEX_SUFFIX, INDEX_SUFFIX + ".tmp"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
