"""The long-lived processes' garbage collector (server and worker): start-up heap frozen, collections spaced out."""

from __future__ import annotations

import gc
import subprocess
import sys

from cas.collector import BURST_YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD, YOUNG_THRESHOLD, Burst

PROBE = """
import gc
from cas.collector import tune_for_serving
cycle = []
cycle.append(cycle)  # start-up garbage is collected before the freeze, not frozen
del cycle
tune_for_serving()
print(gc.get_threshold(), gc.get_freeze_count() > 0, gc.isenabled(), gc.garbage, sep=chr(10))
"""


def test_tune_for_serving_freezes_the_start_up_heap_and_raises_the_thresholds() -> None:
    # In a child process: freezing would otherwise change the test runner's own collector.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"({YOUNG_THRESHOLD}, {MIDDLE_THRESHOLD}, {OLD_THRESHOLD})", "True", "True", "[]"]


def test_a_burst_spaces_young_collections_until_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first = Burst()
    second = Burst()  # a second action's input fetch at the same time
    assert gc.get_threshold() == (BURST_YOUNG_THRESHOLD, *before[1:])
    first.end()
    first.end()  # idempotent: an action's finally ends it again
    assert gc.get_threshold() == (BURST_YOUNG_THRESHOLD, *before[1:])
    second.end()
    assert gc.get_threshold() == before
    assert gc.isenabled()
