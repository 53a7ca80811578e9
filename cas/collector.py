"""The cyclic garbage collector, tuned for the long-lived processes (server and worker)
whose calls make many short-lived objects.

A FindMissingBlobs of 10,000 digests or a batch of 1,000 blobs on the server, or a
cold input fetch of 1,000 files on the worker, allocates tens of thousands of tuples,
messages and strings that die with the call. With CPython's default thresholds (700,
10, 10) such a call runs dozens of young collections, and the objects still alive then
(the call's own digests, the cache index entries just added) are promoted and soon
counted towards a full collection, which walks the whole heap: the stores' indexes or
the worker's file cache index included. Measured on this kind of host, the collector
took 10-18% of the server's CPU per CAS call (docs/BENCHMARKS.md, "Server CPU per
call") and 3-9 ms of a worker's cold fetch ("Input fetch against a plain bot").

Almost nothing either allocates is cyclic: reference counting frees it. So each
process entry point (the server's ``serve``, not ``start_server``, which tests run
inside their own process; the worker's ``serve``) freezes what start-up built, which
is never garbage, and runs middle and full collections far less often
(``MIDDLE_THRESHOLD``, ``OLD_THRESHOLD``).

Young collections stay at CPython's 700 allocations. Spacing them out too (50,000)
measured no better per call once the start-up heap was frozen, and it cost memory:
each gRPC call leaves a small cycle (grpc.aio's method lookup), and while a write
failed with ENOSPC a server collecting young objects every 50,000 allocations grew
by ~1 MiB per failed 3 MiB write without bound (freed too late, in a heap fragmented
by the large buffers in between), where 700 keeps it flat
(tests/server/test_full_disk.py). The worker spaces them out only from each
input fetch until its action's process has started (``Burst``): they ran on the action's
critical path, and the one collection after the burst runs while the action does.
"""

from __future__ import annotations

import gc

# Container allocations (net of frees) between young collections: CPython's own.
YOUNG_THRESHOLD = 700
# Young collections per middle one, and middle ones per full one (CPython: 10, 10).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100
# Young collections during a ``Burst``: a cold input fetch's tens of
# thousands of short-lived objects then make one or two young collections, not dozens.
BURST_YOUNG_THRESHOLD = 50_000

_bursts = 0  # bursts open now
_between_bursts = (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def tune_for_serving() -> None:
    """Freeze the start-up heap and space out collections; call once, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


class Burst:
    """Young collections spaced to ``BURST_YOUNG_THRESHOLD`` from its making until ``end``
    (idempotent) while any burst is open; the thresholds come back when the last ends.

    Why: a worker's cold input fetch (the lease's files read, the tree planned, the
    cache index, pins) allocates a Digest, a tuple or a dict entry per file within a
    few milliseconds; at 700 allocations a young collection runs every ~0.1 ms of it,
    and every 20 of them a middle one that walks all their survivors (about 1 ms), on
    the action's critical path. Spaced out for the burst, the same objects meet one
    young collection after it (the worker ends it once the action's process has
    started, so that collection overlaps the action). Memory stays bounded: at most that many container
    objects between collections, and only while a burst is open."""

    def __init__(self) -> None:
        global _bursts, _between_bursts
        if _bursts == 0:
            _between_bursts = gc.get_threshold()
            gc.set_threshold(BURST_YOUNG_THRESHOLD, *_between_bursts[1:])
        _bursts += 1
        self._open = True

    def end(self) -> None:
        global _bursts
        if not self._open:
            return
        self._open = False
        _bursts -= 1
        if _bursts == 0:
            gc.set_threshold(*_between_bursts)
