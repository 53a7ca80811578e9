"""How big a PackedStore's segments are, and which size settings work together.

A segment is the unit of eviction and holds a file descriptor and a memory map, so
its size trades how much one eviction frees against how many files stay open.
PackedStore checks these rules whenever one is built.
"""

from __future__ import annotations

from cas.packed.format import BATCH_OVERHEAD, SEGMENT_HEADER

DEFAULT_MAX_VALUE_SIZE = 1 << 20
# A batch is capped so one caller's big batch cannot hold the others up for long.
DEFAULT_BATCH_BYTES = 4 << 20
# Segments are an eviction unit: small enough that dropping one frees a small part
# of the store, big enough that files stay few.
MAX_DEFAULT_SEGMENT_SIZE = 64 << 20
MAX_SEGMENT_SIZE = 1 << 30  # index files hold offsets as u32
# Each segment holds a memory map and a file descriptor (Python's mmap keeps its own
# copy of the descriptor), so a store has at most this many: by default a quarter.
MAX_SEGMENTS = 4096
DEFAULT_MAX_SEGMENTS = 1024


def default_segment_size(max_bytes: int, max_value_size: int) -> int:
    """A sixteenth of the store, at most 64 MiB, but large enough for the largest value
    and for the store to need no more than DEFAULT_MAX_SEGMENTS segments."""
    size = max(
        min(MAX_DEFAULT_SEGMENT_SIZE, max_bytes // 16),
        -(-max_bytes // DEFAULT_MAX_SEGMENTS),
        max_value_size + SEGMENT_HEADER.size + BATCH_OVERHEAD,
    )
    return min(MAX_SEGMENT_SIZE, -(-size // 4096) * 4096)


def check_sizes(max_bytes: int, max_value_size: int, segment_size: int) -> None:
    """ValueError naming the setting at fault (the config layer adds the store's name)."""
    if max_value_size < 1:
        raise ValueError(f"max_value_size {max_value_size} must be at least 1 byte")
    if segment_size > MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size {segment_size} is over the {MAX_SEGMENT_SIZE}-byte maximum")
    if segment_size < max_value_size + SEGMENT_HEADER.size + BATCH_OVERHEAD:
        raise ValueError(
            f"segment_size {segment_size} cannot hold a value of max_value_size {max_value_size} bytes "
            f"(it needs at least {max_value_size + SEGMENT_HEADER.size + BATCH_OVERHEAD})"
        )
    if max_bytes > MAX_SEGMENTS * segment_size:
        raise ValueError(
            f"max_size {max_bytes} would take more than {MAX_SEGMENTS} segments of segment_size {segment_size} "
            "(each holds a file descriptor and a memory map); raise segment_size or lower max_size"
        )
    if max_bytes < 2 * segment_size:
        raise ValueError(
            f"max_size {max_bytes} must hold at least two segments of segment_size {segment_size} "
            "(eviction drops a whole segment while another takes writes)"
        )
