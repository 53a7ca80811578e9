"""A sealed segment's index file, ``<seq>.idx``: its records without their values.

Opening a store must rebuild the in-memory index. Scanning a segment means
reading and checksumming all of its bytes (every value), which for a large store
after a reboot means reading the whole store from disk. A segment is written only
until it is full, so when it is sealed its record list is final: the store then
flushes the segment to disk (fdatasync) and only after that writes this file, so
an index file that exists and checks out always describes data that is durable.
Opening reads the index files (a few bytes per value) and scans only segments
that have none: the one being written when the process stopped.

Layout: a header (magic, seq, the segment's data end, record count, body length,
CRC-32 of everything else), then columns: value offsets and lengths (u32), digest
functions (u8), digest sizes (u64) and the hashes as raw bytes, back to back.
Columns decode in a few C calls, which is what makes 100,000 records cheap.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from functools import partial

from cas.digest import ALGORITHMS, Digest
from cas.packed.format import SegmentRecords

INDEX_MAGIC = b"RPKIDX01"
_HEADER = struct.Struct("<8sQQII")  # magic, seq, end, count, body length
_CRC = struct.Struct("<I")
_HEX_LENGTH = {f: a.hex_length for f, a in ALGORITHMS.items()}
# Builds a Digest from a (hash, size, function) tuple without running Python code.
_make_digest = partial(tuple.__new__, Digest)


def encode_index(seq: int, end: int, keys: Sequence[Digest], offsets: Sequence[int], lengths: Sequence[int]) -> bytes:
    count = len(keys)
    body = b"".join((
        struct.pack(f"<{count}I", *offsets),
        struct.pack(f"<{count}I", *lengths),
        bytes(d.function for d in keys),
        struct.pack(f"<{count}Q", *(d.size_bytes for d in keys)),
        bytes.fromhex("".join(d.hash for d in keys)),
    ))
    head = _HEADER.pack(INDEX_MAGIC, seq, end, count, len(body))
    return head + body + _CRC.pack(zlib.crc32(body, zlib.crc32(head)))


def decode_index(data: bytes, seq: int) -> SegmentRecords | None:
    """The records an index file lists, or None if it is damaged or not segment ``seq``'s."""
    if len(data) < _HEADER.size + _CRC.size:
        return None
    magic, found_seq, end, count, body_length = _HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or found_seq != seq or len(data) != _HEADER.size + body_length + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        return None
    position = _HEADER.size
    offsets = list(struct.unpack_from(f"<{count}I", data, position))
    position += 4 * count
    lengths = list(struct.unpack_from(f"<{count}I", data, position))
    position += 4 * count
    functions = data[position : position + count]
    position += count
    sizes = struct.unpack_from(f"<{count}Q", data, position)
    position += 8 * count
    hashes = data[position : -_CRC.size].hex()
    keys = _digests(hashes, functions, sizes)
    if keys is None:
        return None
    return SegmentRecords(keys=keys, offsets=offsets, lengths=lengths, end=end)


def _digests(hashes: str, functions: bytes, sizes: Sequence[int]) -> list[Digest] | None:
    """Digests from the hash column (hex) and the function and size columns, built with
    C-level passes when every record has the same function (the usual case)."""
    kinds = set(functions)
    if len(kinds) == 1 and (width := _HEX_LENGTH.get(functions[0])):
        if len(hashes) != width * len(sizes):
            return None
        parts = [hashes[i : i + width] for i in range(0, len(hashes), width)]
        return list(map(_make_digest, zip(parts, sizes, functions)))
    keys = []
    at = 0
    for function, size in zip(functions, sizes):
        width = _HEX_LENGTH.get(function, 0)
        if not width:
            return None
        keys.append(_make_digest((hashes[at : at + width], size, function)))
        at += width
    return keys if at == len(hashes) else None


def write_index_file(path: str, data: bytes) -> None:
    """Write atomically (temp file + rename); a crash leaves the old state or none."""
    temp = f"{path}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(temp, path)


def read_index_file(path: str, seq: int) -> SegmentRecords | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return decode_index(data, seq)
