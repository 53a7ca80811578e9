"""The worker's cyclic garbage collector, tuned as the server's is (server/collector.py).

A cold input fetch of 1,000 files allocates tens of thousands of short-lived objects
(digests, cache keys, BatchReadBlobs messages, places), and the worker keeps a heap
that grows with its cache (the file cache's index: a key per cached file). With
CPython's default thresholds (700, 10, 10) each such fetch runs dozens of young
collections, and what survives them (the index entries just added) is soon counted
towards middle and full collections, which walk that heap. Almost nothing the worker
allocates is cyclic, so, as the server does, it freezes what start-up built (the
index of the cache found on disk included) and runs middle and full collections far
less often. Young collections stay at CPython's 700 allocations (a larger value
lets the small cycles grpc.aio leaves per call pile up; server/collector.py says
what that cost there).
"""

from __future__ import annotations

import gc

# Container allocations (net of frees) between young collections: CPython's own.
YOUNG_THRESHOLD = 700
# Young collections per middle one, and middle ones per full one (CPython: 10, 10).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def tune_for_serving() -> None:
    """Freeze the start-up heap and space out collections; call once, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
