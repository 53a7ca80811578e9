"""An input sketch's probe positions in a cache filter of one size, worked out once per sketch.

Locality's estimate (locality.held_bytes) tests an action's sampled files (its sketch's
records) against a bot's cache filter (cas/digest_filter.py). Where a record's probes
fall depends only on the record and on the filter's size and probe count, and every
reapi-worker sends a filter of one size: so the positions are worked out once per
(sketch, size, probes) and kept, here, for every later claim and every bot. A queued
action's sketch does not change while it waits, and a claim's window looks at the same
actions claim after claim; before, every estimate redid the probe arithmetic of its
records (16 x 16 per claim: a drain's main cost).

Keyed by the sketch's bytes (their hash is cached by Python), so nothing goes stale: a
new filter size is another key, a changed filter (its bits) is read at each test. At
most ``PLANS`` are kept, the oldest dropped first.
"""

from __future__ import annotations

import struct

from cas.digest_filter import HEADER, probe_spots

PLANS = 1024  # sketches' plans kept (about 11 KiB each for 16 records of 7 probes): a few windows' worth
_TOTAL = struct.Struct(">Q")  # a sketch: its input bytes, then records (locality.sketch_of)
_RECORD = struct.Struct(">IIQ")  # h1, h2 (digest_filter.probe_seeds), the file's size

Spots = tuple[tuple[int, int], ...]  # (byte index in the filter's wire form, bit mask) per probe
Plan = tuple[int, int, tuple[tuple[Spots, int, int], ...]]  # total, sampled bytes, (spots, key, size) per record

_plans: dict[tuple[bytes, int, int], Plan] = {}


def plan_of(sketch: bytes, summary: bytes) -> Plan:
    """(input bytes, bytes sampled, (spots, record key, size) per record) of a non-empty
    sketch against filters shaped like ``summary`` (a valid wire form): the spots are
    where ``holds`` would test, in the wire form (after its header)."""
    geometry = (sketch, len(summary), summary[1])
    plan = _plans.get(geometry)
    if plan is None:
        bits = (len(summary) - HEADER) * 8
        probes = summary[1]
        records = []
        sampled = 0
        for h1, h2, size in _RECORD.iter_unpack(memoryview(sketch)[_TOTAL.size:]):
            sampled += size
            spots = tuple(probe_spots(bits, probes, h1, h2, HEADER))
            records.append((spots, h1 << 32 | h2, size))
        plan = (_TOTAL.unpack_from(sketch)[0], sampled, tuple(records))
        if len(_plans) >= PLANS:
            del _plans[next(iter(_plans))]
        _plans[geometry] = plan
    return plan


def plans_kept() -> int:
    """How many plans are kept now (for tests: bounded by ``PLANS``)."""
    return len(_plans)
