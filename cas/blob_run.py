"""A run of small blobs in one byte string: the wire form of a lease's inline input files.

Why not a ``BatchReadBlobsResponse``: a lease may carry a thousand small files, and
a message of a thousand entries costs a Python object per entry at each end (about
0.6 ms to encode on the server and 0.7 ms to read on the worker per 1,000 files, on
the critical path of a cold action). This form is a few fixed-width columns that both
ends make and read in whole-list C-level passes (docs/BOTS_PROTOCOL.md section 7,
"Input files in one run"):

    byte 0       the form's version, 1
    byte 1       H, the length of each hash in hex characters (64 for SHA-256)
    bytes 2-5    N, the number of blobs (unsigned, little-endian)
    4 x N bytes  each blob's size (unsigned 32-bit, little-endian)
    H x N bytes  each blob's hash (lowercase hex, ASCII)
    the blobs' contents, concatenated in the same order

Nothing here is trusted by the reader: a run whose lengths do not add up is not read
at all, and each blob is checked against its digest where it is used.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Sequence
from functools import partial
from itertools import accumulate, repeat

from cas.digest import Digest

VERSION = 1
_HEADER = 6
RUN_HEADER = _HEADER  # a run's bytes besides its blobs' (each adds its size, 4 and its hash)
_SIZES = "I"  # unsigned 32-bit on the platforms this runs on (checked below)
_LITTLE = sys.byteorder == "little"
_make_digest = partial(tuple.__new__, Digest)  # (hash, size, function), unchecked: verified where used
_SPLITTERS: dict[int, re.Pattern[str]] = {}
assert array(_SIZES).itemsize == 4


def encode_run(hashes: Sequence[str], datas: Sequence[bytes]) -> bytes | None:
    """The run of ``datas`` named by ``hashes`` (hex, all one length); None if there is
    nothing to send or it cannot be written in this form (mixed hash lengths, a blob
    of 4 GiB or more, a hash that is not ASCII)."""
    if not hashes or len(hashes) != len(datas):
        return None
    length = len(hashes[0])
    if not 0 < length < 256 or set(map(len, hashes)) != {length}:
        return None
    try:
        sizes = array(_SIZES, map(len, datas))
        names = "".join(hashes).encode("ascii")
    except (OverflowError, UnicodeEncodeError):
        return None
    if not _LITTLE:
        sizes.byteswap()
    header = bytes((VERSION, length)) + len(datas).to_bytes(4, "little")
    return b"".join((header, sizes.tobytes(), names, *datas))


def decode_run(raw: bytes, function: int) -> dict[Digest, bytes]:
    """The blobs of a run as Digest (of ``function``) -> bytes; empty for a run that is
    malformed or of another version (the reader then reads those blobs elsewhere)."""
    if len(raw) < _HEADER or raw[0] != VERSION:
        return {}
    length = raw[1]
    count = int.from_bytes(raw[2:6], "little")
    start = _HEADER + 4 * count
    end = start + length * count
    if not length or end > len(raw):
        return {}
    sizes = array(_SIZES)
    sizes.frombytes(raw[_HEADER:start])
    if not _LITTLE:
        sizes.byteswap()
    bounds = list(accumulate(sizes, initial=end))
    if bounds[-1] != len(raw):
        return {}
    try:
        names = raw[start:end].decode("ascii")
    except UnicodeDecodeError:
        return {}
    splitter = _SPLITTERS.get(length)
    if splitter is None:
        splitter = _SPLITTERS.setdefault(length, re.compile(f".{{{length}}}", re.DOTALL))
    hashes = splitter.findall(names)
    datas = map(raw.__getitem__, map(slice, bounds, bounds[1:]))
    return dict(zip(map(_make_digest, zip(hashes, sizes, repeat(function))), datas))
