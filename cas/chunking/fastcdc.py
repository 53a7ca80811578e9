"""FastCDC 2020 chunk boundaries, as REv2's SplitBlob and SpliceBlob agree on them.

The algorithm (Xia et al., 2020, with REv2's normalization level 2): from a chunk's
start, skip ``min_size`` bytes, then roll the gear hash ``h = (h << 1) + GEAR[byte]``
(64-bit) and cut before the byte where ``h & mask == 0``; ``mask`` has more bits
(cuts are rarer) until the average size and fewer after it; cut at ``max_size`` if
nothing matched. Positions are scanned from ``min_size`` rounded down to even, as the
reference implementations' two-bytes-per-step loop does.

The loop is done in C when the optional extension cas/chunking/_gearcut.c was built
(pip builds it where a C compiler is). Otherwise it is vectorised with numpy (done
a byte at a time in Python it would be a few MB/s). Two facts make that possible:
after a shift of 64 a byte has left the hash, so past the first 63 bytes of a scan
``h`` at position p is a function of the 64 bytes ending at p alone (the same for
every chunk start); and its low 32 bits depend on the last 32 bytes only. So numpy
computes, for all positions at once, the low 32 bits by doubling the window
(1, 2, 4, 8, 16, 32 bytes: five shift-and-add passes), keeps the positions whose
low bits pass both masks' common bits (about one in 500 at 512 KiB), and checks those
exactly over 64 bytes. Cutting then walks this short, sorted list of candidates;
only the first 63 positions of each scan, where the hash has not yet seen 64 bytes
of the chunk, are hashed in Python. tests/cas/test_fastcdc.py compares both ways'
results with an independent implementation on many inputs; docs/BENCHMARKS.md has
the speeds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from cas.chunking.gear import GEAR, MASKS

try:
    from cas.chunking import _gearcut
except ImportError:  # built without a C compiler: the numpy scan does the work
    _gearcut = None  # type: ignore[assignment]

NATIVE = _gearcut is not None

MASK64 = (1 << 64) - 1
HISTORY = 63  # bytes before a position that its full hash still depends on
BLOCK = 64 << 10  # bytes hashed per numpy pass: the work arrays stay in cache

DEFAULT_AVG_SIZE = 512 << 10


@dataclass(frozen=True)
class FastCdcParams:
    """One parameter set; REv2 derives min and max from the average (explicit sizes are
    for matching published test vectors)."""

    avg_size: int = DEFAULT_AVG_SIZE
    seed: int = 0
    normalization: int = 2
    min_size: int = 0  # 0: avg_size // 4
    max_size: int = 0  # 0: avg_size * 4

    def __post_init__(self) -> None:
        if self.avg_size <= 0 or self.avg_size & (self.avg_size - 1):
            raise ValueError(f"FastCDC average size {self.avg_size} is not a power of two")
        bits = self.avg_size.bit_length() - 1
        if bits - self.normalization not in MASKS or bits + self.normalization not in MASKS:
            raise ValueError(f"FastCDC average size {self.avg_size} with normalization {self.normalization} has no masks")
        if not 64 <= self.min_chunk <= self.avg_size <= self.max_chunk:
            raise ValueError(f"FastCDC sizes need 64 <= min {self.min_chunk} <= avg {self.avg_size} <= max {self.max_chunk}")
        if not 0 <= self.seed <= MASK64:
            raise ValueError(f"FastCDC seed {self.seed} is not a 64-bit value")

    @property
    def min_chunk(self) -> int:
        return self.min_size or self.avg_size // 4

    @property
    def max_chunk(self) -> int:
        return self.max_size or self.avg_size * 4


class FastCdc:
    """Chunk boundaries for one parameter set; the tables are prepared once."""

    def __init__(self, params: FastCdcParams = FastCdcParams(), native: bool = NATIVE) -> None:
        """``native``: cut with the C loop (when built) rather than the numpy scan."""
        if native and _gearcut is None:
            raise ValueError("the C FastCDC loop (cas/chunking/_gearcut.c) was not built")
        self.params = params
        self.native = native
        bits = params.avg_size.bit_length() - 1
        self.mask_small = MASKS[bits + params.normalization]  # before the average: rarer cuts
        self.mask_large = MASKS[bits - params.normalization]  # after it: likelier cuts
        self.gear = [g ^ params.seed for g in GEAR]
        self.gear64 = np.array(self.gear, dtype=np.uint64)
        self.gear_table = self.gear64.tobytes()  # native byte order, as the C loop reads it
        self.gear32 = (self.gear64 & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        # A position can match either mask only if its low 32 bits pass both masks' common bits.
        self.prefilter = np.uint32((self.mask_small & self.mask_large) & 0xFFFFFFFF)
        self.back = np.arange(HISTORY + 1, dtype=np.intp)  # a position and the 63 bytes before it
        self.shifts = np.arange(HISTORY + 1, dtype=np.uint64)

    def chunker(self) -> Chunker:
        return Chunker(self)

    def split(self, data: bytes | bytearray | memoryview) -> list[int]:
        """The chunk lengths of ``data``, in order (they add up to its length)."""
        if self.native:  # no copies: cut the data where it is
            params, lengths, offset = self.params, [], 0
            while offset < len(data):
                lengths.append(_gearcut.cut(data, offset, len(data) - offset, params.min_chunk, params.avg_size,
                                            params.max_chunk, self.mask_small, self.mask_large, self.gear_table))
                offset += lengths[-1]
            return lengths
        chunker = self.chunker()
        lengths = [len(c) for c in chunker.feed(data)]
        lengths += [len(c) for c in chunker.finish()]
        return lengths

    def scan(self, view: np.ndarray, start: int, end: int) -> tuple[list[int], list[int]]:
        """Positions in ``view[start:end]`` (``start`` >= 63) whose 64-byte gear hash passes
        the large mask, and those passing the small one, as indices into ``view``."""
        work = np.empty(BLOCK + 32, dtype=np.uint32)
        scratch = np.empty(BLOCK + 32, dtype=np.uint32)
        index = np.empty(BLOCK + 32, dtype=np.intp)  # take() is ~4x slower with uint8 indices
        found = []
        for first in range(start, end, BLOCK):
            last = min(first + BLOCK, end)
            segment = view[first - 31 : last]  # each position needs the 31 bytes before it
            size = len(segment)
            index[:size] = segment
            np.take(self.gear32, index[:size], out=work[:size])
            for step in (1, 2, 4, 8, 16):
                # work[i] becomes the hash of a window twice as long, ending one step later
                np.left_shift(work[: size - step], step, out=scratch[: size - step])
                np.add(work[step:size], scratch[: size - step], out=work[: size - step])
                size -= step
            # Now work[i] holds the low 32 bits of the hash at view[first + i].
            np.bitwise_and(work[:size], self.prefilter, out=scratch[:size])
            hits = np.flatnonzero(scratch[:size] == 0)
            if hits.size:
                found.append(hits + first)
        if not found:
            return [], []
        positions = np.concatenate(found)
        windows = view[positions[:, None] - self.back]  # row i: byte p, p-1, ..., p-63
        full = (self.gear64[windows] << self.shifts).sum(axis=1, dtype=np.uint64)
        large = positions[(full & np.uint64(self.mask_large)) == 0]
        small = positions[(full & np.uint64(self.mask_small)) == 0]
        return large.tolist(), small.tolist()


class Chunker:
    """Incremental chunking: ``feed`` bytes as they come, get chunks as their ends are known.

    A chunk's end is decided once ``max_size`` bytes past its start are in (or at
    ``finish``), so at most about ``max_size`` plus one fed piece is held. Hashes are
    computed only where a cut may fall, a block at a time from the chunk's minimum
    size on, until the cut: never over the first ``min_size`` bytes of a chunk (a
    fifth of the data at REv2's sizes) nor past the cut.
    """

    def __init__(self, cdc: FastCdc) -> None:
        self.cdc = cdc
        self._buffer = bytearray()
        self._start = 0  # offset of the buffer's first byte: the current chunk's start
        self._scanned = 0  # candidates are known for every position from the last scan's start to here
        self._large: list[int] = []  # sorted candidate positions (absolute offsets)
        self._small: list[int] = []

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take ``data``; return the chunks completed so far."""
        if not data:
            return []
        self._buffer += data
        return self._cut_all(eof=False)

    def finish(self) -> list[bytes]:
        """The remaining chunks, the last one ending where the data did."""
        return self._cut_all(eof=True)

    def _cut_all(self, eof: bool) -> list[bytes]:
        chunks = []
        max_size = self.cdc.params.max_chunk
        buffer, offset = self._buffer, 0
        view = np.frombuffer(buffer, dtype=np.uint8)
        data = memoryview(buffer)
        while offset < len(buffer) and (eof or len(buffer) - offset >= max_size):
            length = self._cut_length(view, offset, len(buffer) - offset)
            chunks.append(bytes(data[offset : offset + length]))  # one copy
            offset += length
            self._start += length
        del view, data  # a bytearray cannot be resized while others look at it
        del buffer[:offset]  # once: a fed piece may hold many chunks
        for positions in (self._large, self._small):  # forget candidates behind us
            del positions[: bisect.bisect_left(positions, self._start)]
        return chunks

    def _cut_length(self, view: np.ndarray, offset: int, available: int) -> int:
        """The length of the chunk starting at ``self._start`` (``offset`` in the buffer),
        given ``available`` bytes (all there is, or at least ``max_size``)."""
        params, cdc = self.cdc.params, self.cdc
        if available <= params.min_chunk:
            return available
        if cdc.native:
            return _gearcut.cut(self._buffer, offset, available, params.min_chunk, params.avg_size, params.max_chunk,
                                cdc.mask_small, cdc.mask_large, cdc.gear_table)
        remaining, center = available, params.avg_size
        if remaining > params.max_chunk:
            remaining = params.max_chunk
        elif remaining < center:
            center = remaining
        scan_start = params.min_chunk & ~1
        normal_at = center & ~1
        scan_end = remaining & ~1
        # The first 63 positions: the hash has not yet seen 64 bytes of this chunk.
        exact_end = min(scan_start + HISTORY, scan_end)
        gear, buffer, h = cdc.gear, self._buffer, 0
        for k in range(scan_start, exact_end):
            h = ((h << 1) + gear[buffer[offset + k]]) & MASK64
            if not h & (cdc.mask_small if k < normal_at else cdc.mask_large):
                return k
        # From there on, the candidates say where the hash matches: found a block at a time.
        base = self._start
        low, middle, high = base + exact_end, base + normal_at, base + scan_end
        self._scanned = max(self._scanned, low)
        while True:
            known = self._scanned
            cut = _first_in(self._small, low, min(middle, known))
            if cut is None and known > middle:
                cut = _first_in(self._large, max(low, middle), min(high, known))
            if cut is not None:
                return cut - base
            if known >= high:
                return remaining
            step_end = min(known + BLOCK, high)
            large, small = cdc.scan(view, known - base + offset, step_end - base + offset)
            shift = base - offset  # buffer index -> absolute offset
            self._large.extend(p + shift for p in large)
            self._small.extend(p + shift for p in small)
            self._scanned = step_end


def _first_in(positions: list[int], low: int, high: int) -> int | None:
    """The first of the sorted ``positions`` in [low, high), if any."""
    i = bisect.bisect_left(positions, low)
    if i < len(positions) and positions[i] < high:
        return positions[i]
    return None
