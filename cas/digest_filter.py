"""DigestFilter: a Bloom filter over blob digests, the compact summary of a cache a bot sends.

A worker tells the server which blobs its cache holds (docs/BOTS_PROTOCOL.md section
8) in a few KiB, whatever the cache's size: a Bloom filter of its most recently used
blobs. The server asks it about a handful of an action's input files
(server/scheduler/locality.py). False positives only make a bot look a little
better placed than it is; there are no false negatives for what was added.

Wire form, version 1: one byte ``1``, one byte ``k`` (probes per digest, 1 to 16),
then the bit array, ``m`` = 8 x its length bits (64 to 2^24). Bit ``i`` is
``array[i >> 3] >> (7 - (i & 7)) & 1``: the order of Redis' GETBIT, so a state kept
in Redis can test bits where the filter lies. A digest's probes come from its hash,
which is already uniformly random: ``h1`` = the hash's first 32 bits (hex characters
0-8), ``h2`` = the next 32 bits with the lowest bit set, probe ``j`` = ``(h1 + j *
h2) mod m``. The digest function and the size are not part of it: two digests with
equal hash prefixes are one to the filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

VERSION = 1
MAX_PROBES = 16
MIN_BITS = 64
MAX_BITS = 1 << 24
HEADER = 2


def probe_seeds(hash_hex: str) -> tuple[int, int]:
    """(h1, h2) of a digest's hash: every probe position follows from them."""
    return int(hash_hex[:8], 16), int(hash_hex[8:16], 16) | 1


class DigestFilter:
    """A Bloom filter of ``bits`` bits (a multiple of 8) and ``probes`` probes per digest."""

    __slots__ = ("bits", "probes", "array")

    def __init__(self, bits: int, probes: int, array: bytearray | None = None) -> None:
        if bits % 8 or not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"a digest filter has a multiple of 8 bits from {MIN_BITS} to {MAX_BITS}, not {bits}")
        if not 1 <= probes <= MAX_PROBES:
            raise ValueError(f"a digest filter probes 1 to {MAX_PROBES} times per digest, not {probes}")
        self.bits = bits
        self.probes = probes
        self.array = array if array is not None else bytearray(bits // 8)

    @classmethod
    def sized_for(cls, entries: int, max_bytes: int) -> DigestFilter:
        """About 10 bits per entry (1% false positives), within ``max_bytes`` of wire form."""
        size = max(MIN_BITS // 8, min(max_bytes - HEADER, MAX_BITS // 8, (entries * 10 + 7) // 8))
        bits = size * 8
        probes = max(1, min(7, round(bits / max(entries, 1) * 0.69)))
        return cls(bits, probes)

    def add(self, hash_hex: str) -> None:
        h1, h2 = probe_seeds(hash_hex)
        bits, array = self.bits, self.array
        for j in range(self.probes):
            position = (h1 + j * h2) % bits
            array[position >> 3] |= 0x80 >> (position & 7)

    def add_all(self, hashes: Iterable[str]) -> None:
        for hash_hex in hashes:
            self.add(hash_hex)

    def __contains__(self, hash_hex: object) -> bool:
        if not isinstance(hash_hex, str):
            return False
        return holds(self.array, self.bits, self.probes, *probe_seeds(hash_hex))

    def to_bytes(self) -> bytes:
        return bytes((VERSION, self.probes)) + bytes(self.array)

    @classmethod
    def from_bytes(cls, data: bytes) -> DigestFilter:
        """ValueError, saying what is wrong, unless ``data`` is a version 1 filter."""
        if len(data) < HEADER:
            raise ValueError("a digest filter has at least two bytes (version, probes)")
        if data[0] != VERSION:
            raise ValueError(f"digest filter version {data[0]} is not known (1 is)")
        return cls((len(data) - HEADER) * 8, data[1], bytearray(data[HEADER:]))


def probe_spots(bits: int, probes: int, h1: int, h2: int, offset: int = 0) -> list[tuple[int, int]]:
    """The (byte index from ``offset``, bit mask) of each probe of (h1, h2) in a bit
    array of ``bits`` bits: what ``holds`` tests, worked out once for a caller that
    tests the same records against many filters of one size."""
    return [(offset + (p >> 3), 0x80 >> (p & 7)) for p in ((h1 + j * h2) % bits for j in range(probes))]


def holds(array: bytes | bytearray, bits: int, probes: int, h1: int, h2: int, offset: int = 0) -> bool:
    """Whether every probe of (h1, h2) is set in ``array`` (from ``offset``: a wire form
    can be tested where it lies)."""
    for j in range(probes):
        position = (h1 + j * h2) % bits
        if not array[offset + (position >> 3)] & (0x80 >> (position & 7)):
            return False
    return True


def holds_each(wire: bytes, hashes: Sequence[str]) -> list[bool]:
    """For each hash, whether the filter in wire form ``wire`` (checked: ``from_bytes``
    accepts it) holds it, as ``holds`` says, in whole-array passes: the server asks
    about a lease's thousand input files at once (server/services/lease_inputs.py).
    Hashes must be at least 16 hex digits (every digest function's are)."""
    if not hashes:
        return []
    array = np.frombuffer(wire, np.uint8, offset=HEADER)
    bits = np.uint64(array.size * 8)
    seeds = np.frombuffer(bytes.fromhex("".join([h[:16] for h in hashes])), ">u4").astype(np.uint64)
    h1, h2 = seeds[0::2], seeds[1::2] | np.uint64(1)
    held = np.ones(len(hashes), dtype=bool)
    for j in range(wire[1]):
        position = (h1 + np.uint64(j) * h2) % bits
        held &= (array[position >> np.uint64(3)] & (np.uint8(0x80) >> (position & np.uint64(7)).astype(np.uint8))) != 0
    return held.tolist()
