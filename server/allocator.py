"""glibc's allocator, tuned for a server whose large messages come and go.

gRPC receives a 1 MiB message into buffers of its own and then into a Python bytes
object; ByteStream reads and writes move 64 such messages per 64 MiB blob. glibc
serves an allocation over its mmap threshold (128 KiB at first, raised up to 32 MiB
as such blocks are freed) with a fresh ``mmap`` and returns it with ``munmap`` when
freed, and gives the top of its heap back to the system beyond a trim threshold:
either way every large message landed in fresh pages, each one zeroed and mapped
by a page fault. On this kind of host a bare grpc.aio server receiving 64 x 1 MiB
spent about a third of its CPU in those faults (75 -> 45 ms per call once they were
gone; docs/BENCHMARKS.md, "Server CPU per CAS call").

So the served process fixes the mmap threshold at glibc's maximum, which keeps
blocks of up to 32 MiB in the heap for reuse, and keeps up to ``TRIM_THRESHOLD`` of
free heap rather than returning it after every call. The memory is given back when
uploads are dropped (cas/released.py ``give_back_memory``, which trims regardless of
the threshold), and stays reusable meanwhile. Only ``serve`` (the process entry
point) calls this; tests run servers inside their own process untouched.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("reapi.server")

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (glibc's maximum on 64-bit: 32 MiB).
MMAP_THRESHOLD = 32 << 20
# Free heap kept for reuse before it is returned to the system.
TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> bool:
    """Apply the settings above (glibc only); False where there is no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not applied:
        log.debug("mallopt refused the allocator settings; glibc's defaults stay")
    return applied
