"""The bytes of a PackedStore segment: a header, then checksummed batches of records.

    segment   = SEGMENT_HEADER batch*
    batch     = BATCH_HEADER record*            (one append: one pwritev)
    record    = RECORD_HEADER hash value        (hash as raw bytes)

Why this shape:
- **A batch is the unit of crash safety.** Its header holds its own length, the
  CRC-32 of its records, the segment's sequence number and its own offset, and a
  CRC-32 of those fields. A scan trusts a batch only if both checksums match, so
  a batch torn by a crash (a short write, pages the kernel never wrote back) is
  never served. A damaged body whose header is intact is skipped by its length; a
  damaged header ends the segment, and what follows is cut off at open.
- **Seq and offset in every header** mean bytes left over from another segment or
  from an earlier position can never pass as a batch here.
- **One CRC per batch, not per record**: zlib.crc32 of a 1 MiB batch is one C call
  (~0.3 ms, without the GIL); a thousand 1 KiB records would be a thousand calls.
- Record headers are fixed-size structs, so a scan decodes them with
  ``unpack_from`` straight out of the memory map.

Checksums detect damage, not tampering: values are the clients' bytes, and they
are only ever read at offsets the batch structure vouches for.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from cas.digest import ALGORITHMS, Digest

SEGMENT_MAGIC = b"RPKSEG01"
BATCH_MAGIC = b"RPKB"
# magic, seq, 12 reserved bytes, CRC-32 of the 28 bytes before it
SEGMENT_HEADER = struct.Struct("<8sQ12xI")
# magic, body length, body CRC-32, segment seq, this batch's offset, CRC-32 of the 28 bytes before it
BATCH_HEADER = struct.Struct("<4sIIQQI")
# digest function, hash length in bytes, flags (0), value length, digest size
RECORD_HEADER = struct.Struct("<BBHIQ")
MAX_HASH_BYTES = max(a.hex_length // 2 for a in ALGORITHMS.values())
# The most a record adds to its value, and a batch of one to that.
RECORD_OVERHEAD = RECORD_HEADER.size + MAX_HASH_BYTES
BATCH_OVERHEAD = BATCH_HEADER.size + RECORD_OVERHEAD

_HASH_BYTES = {f: a.hex_length // 2 for f, a in ALGORITHMS.items()}
# Batches of at most this many parts are written without joining them first.
_MAX_SEPARATE_PARTS = 16
# Builds a Digest from a (hash, size, function) tuple without running Python code.
_make_digest = partial(tuple.__new__, Digest)


class Buffer(Protocol):
    """What a scan reads from: an mmap or bytes."""

    def __getitem__(self, index: slice) -> bytes: ...
    def __len__(self) -> int: ...


def segment_header(seq: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, seq, 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))


def encode_records(items: Sequence[tuple[Digest, bytes]], first_offset: int) -> tuple[list[bytes], list[int], list[int]]:
    """The buffers of ``items`` as records starting at ``first_offset`` in the segment,
    and each value's offset and length. Runs on the event loop: cheap per item, no
    copy of the values."""
    parts: list[bytes] = []
    offsets: list[int] = []
    lengths: list[int] = []
    pack = RECORD_HEADER.pack
    header_size = RECORD_HEADER.size
    position = first_offset
    for digest, data in items:
        raw_hash = bytes.fromhex(digest.hash)
        length = len(data)
        parts += (pack(digest.function, len(raw_hash), 0, length, digest.size_bytes) + raw_hash, data)
        position += header_size + len(raw_hash)
        offsets.append(position)
        lengths.append(length)
        position += length
    return parts, offsets, lengths


def frame_batch(parts: Sequence[bytes], seq: int, offset: int) -> list[bytes]:
    """Header and body of a batch at ``offset`` of segment ``seq``, ready for one pwritev.

    Runs in a thread. Many small parts are joined first (one CRC call, and pwritev
    takes at most 1,024 buffers); a few large ones (a big value) are checksummed in
    place and written as they are, sparing a copy.
    """
    if len(parts) <= _MAX_SEPARATE_PARTS:
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        body_parts = list(parts)
    else:
        body = b"".join(parts)
        crc = zlib.crc32(body)
        body_parts = [body]
    length = sum(map(len, body_parts))
    head = BATCH_HEADER.pack(BATCH_MAGIC, length, crc, seq, offset, 0)
    return [head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])), *body_parts]


@dataclass
class SegmentRecords:
    """The records a segment holds, in the order written (later ones win)."""

    keys: list[Digest] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # of each value
    lengths: list[int] = field(default_factory=list)
    end: int = SEGMENT_HEADER.size  # where the last good batch ends
    damaged_batches: int = 0
    torn_tail: bool = False  # bytes after ``end`` that are not a batch, nor unwritten space


class BadSegment(Exception):
    """A segment file whose own header is damaged or belongs to another sequence number."""


def check_segment_header(buf: Buffer, seq: int) -> None:
    if len(buf) < SEGMENT_HEADER.size:
        raise BadSegment(f"{len(buf)} bytes, shorter than a segment header")
    head = buf[: SEGMENT_HEADER.size]
    magic, found_seq, crc = SEGMENT_HEADER.unpack(head)
    if magic != SEGMENT_MAGIC or zlib.crc32(head[:-4]) != crc:
        raise BadSegment("not a packed segment, or its header is damaged")
    if found_seq != seq:
        raise BadSegment(f"its header says segment {found_seq}, its name {seq}")


def scan_segment(buf: Buffer, seq: int, size: int) -> SegmentRecords:
    """Every record of the first ``size`` bytes of a segment whose batches check out."""
    check_segment_header(buf, seq)
    found = SegmentRecords()
    position = SEGMENT_HEADER.size
    while position + BATCH_HEADER.size <= size:
        head = buf[position : position + BATCH_HEADER.size]
        magic, body_length, body_crc, batch_seq, batch_offset, head_crc = BATCH_HEADER.unpack(head)
        body_start = position + BATCH_HEADER.size
        body_end = body_start + body_length
        if (
            magic != BATCH_MAGIC or zlib.crc32(head[:-4]) != head_crc
            or batch_seq != seq or batch_offset != position or body_end > size
        ):
            break
        body = buf[body_start:body_end]
        if zlib.crc32(body) != body_crc or not _decode_body(body, body_start, found):
            found.damaged_batches += 1
        position = found.end = body_end
    # Bytes after the last batch are a torn batch, unless they are zeros: the unwritten
    # rest of a segment that was never sealed (its file is sparse at full capacity).
    found.torn_tail = found.end < size and any(buf[found.end : found.end + BATCH_HEADER.size])
    return found


def _decode_body(body: bytes, base: int, into: SegmentRecords) -> bool:
    """Append the records of one checked batch body (at ``base`` in the segment);
    False, appending nothing, if they do not parse exactly (a writer bug, not a crash)."""
    keys: list[Digest] = []
    offsets: list[int] = []
    lengths: list[int] = []
    position = 0
    unpack = RECORD_HEADER.unpack_from
    header_size = RECORD_HEADER.size
    while position < len(body):
        if position + header_size > len(body):
            return False
        function, hash_bytes, _flags, length, size = unpack(body, position)
        if _HASH_BYTES.get(function) != hash_bytes:
            return False
        value_at = position + header_size + hash_bytes
        if value_at + length > len(body):
            return False
        keys.append(_make_digest((body[position + header_size : value_at].hex(), size, function)))
        offsets.append(base + value_at)
        lengths.append(length)
        position = value_at + length
    into.keys += keys
    into.offsets += offsets
    into.lengths += lengths
    return True
