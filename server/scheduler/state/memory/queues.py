"""One priority queue per requirement set, ordered by (priority, arrival).

Removal (cancellation, a priority change) marks the entry dead in O(1); dead
entries are dropped when they reach the head. A bot takes the best head among the
queues whose requirement sets it satisfies, so the cost of a dispatch is
O(matching queues + log n), whatever the number of queued actions.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from server.scheduler.platform import RequirementSet
from server.scheduler.state.memory.records import Execution

# Heap entry: [priority, seq, execution, alive]. seq is unique, so the comparison
# never reaches the execution.
Entry = list


class ActionQueues:
    def __init__(self) -> None:
        self._heaps: dict[RequirementSet, list[Entry]] = {}
        self._sizes: dict[RequirementSet, int] = {}

    def push(self, execution: Execution) -> None:
        key = execution.action.requirements
        entry: Entry = [execution.priority, execution.seq, execution, True]
        execution.queue_entry = entry
        heapq.heappush(self._heaps.setdefault(key, []), entry)
        self._sizes[key] = self._sizes.get(key, 0) + 1

    def discard(self, execution: Execution) -> None:
        """Take a queued execution out of its queue (it stays in the heap, dead)."""
        entry = execution.queue_entry
        if entry is None or not entry[3]:
            return
        entry[3] = False
        execution.queue_entry = None
        key = execution.action.requirements
        self._sizes[key] -= 1

    def _live_head(self, key: RequirementSet) -> Entry | None:
        heap = self._heaps.get(key)
        while heap:
            if heap[0][3]:
                return heap[0]
            heapq.heappop(heap)
        if heap is not None:
            del self._heaps[key]
            self._sizes.pop(key, None)
        return None

    def pop_best(self, keys: Iterable[RequirementSet]) -> Execution | None:
        """Remove and return the best queued execution among ``keys``' queues."""
        best: Entry | None = None
        best_key = None
        for key in keys:
            head = self._live_head(key)
            if head is not None and (best is None or head[:2] < best[:2]):
                best, best_key = head, key
        if best is None or best_key is None:
            return None
        heapq.heappop(self._heaps[best_key])
        execution: Execution = best[2]
        best[3] = False
        execution.queue_entry = None
        self._sizes[best_key] -= 1
        return execution

    def best_priority(self, keys: Iterable[RequirementSet]) -> int | None:
        """The priority of the best queued execution among ``keys``' queues, if any."""
        best = None
        for key in keys:
            head = self._live_head(key)
            if head is not None and (best is None or head[0] < best):
                best = head[0]
        return best

    def drain(self, key: RequirementSet) -> list[Execution]:
        """Remove every queued execution of one requirement set."""
        heap = self._heaps.pop(key, [])
        self._sizes.pop(key, None)
        out = []
        for entry in sorted(heap):
            if entry[3]:
                entry[3] = False
                entry[2].queue_entry = None
                out.append(entry[2])
        return out

    def sizes(self) -> dict[RequirementSet, int]:
        """Queued executions per requirement set (those with any)."""
        return {key: n for key, n in self._sizes.items() if n > 0}

    def size(self, key: RequirementSet) -> int:
        return self._sizes.get(key, 0)

    def keys(self) -> Iterator[RequirementSet]:
        return iter([k for k, n in self._sizes.items() if n > 0])

    def __len__(self) -> int:
        return sum(self._sizes.values())
