"""A snapshot of the farm for the console, the metrics and the periodic log line:
queue depth per platform, what executes, and each connected worker with its slots
and current actions. Read at scrape or page time, never on the hot path."""

from __future__ import annotations

from typing import NamedTuple

from cas.digest import Digest


class RunningAction(NamedTuple):
    operation: str  # one operation waiting on it (the first), for a link
    action_digest: Digest
    instance_name: str
    since: float  # when the lease was given


class WorkerView(NamedTuple):
    bot_id: str
    session: str
    offer: str  # its properties, described
    capacity: int
    healthy: bool
    running: tuple[RunningAction, ...]


class FarmSnapshot(NamedTuple):
    queued: dict[str, int]  # platform (requirement set, described) -> queued executions
    executing: int
    workers: tuple[WorkerView, ...]

    @property
    def queued_total(self) -> int:
        return sum(self.queued.values())

    def workers_by_platform(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for worker in self.workers:
            counts[worker.offer] = counts.get(worker.offer, 0) + 1
        return counts
