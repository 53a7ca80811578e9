"""Throughput and hit rate over the last minutes, for the dashboard.

A sample of the metrics' running totals every ``interval`` seconds, the last
``keep`` of them kept; the dashboard shows the differences per minute.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import NamedTuple

from server.metrics.families import ServerMetrics
from server.metrics.totals import Totals


class Minute(NamedTuple):
    ended: float
    delta: Totals


class RecentActivity:
    def __init__(self, metrics: ServerMetrics, interval: float = 60.0, keep: int = 15) -> None:
        self.metrics = metrics
        self.interval = interval
        self.samples: collections.deque[tuple[float, Totals]] = collections.deque(maxlen=keep + 1)
        self.samples.append((time.time(), Totals.read(metrics)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample_forever(), name="reapi-console-activity")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.samples.append((time.time(), Totals.read(self.metrics)))

    def minutes(self) -> list[Minute]:
        """Closed intervals, newest first, then the one still open (up to now)."""
        points = [*self.samples, (time.time(), Totals.read(self.metrics))]
        out = [Minute(t1, b - a) for (_, a), (t1, b) in zip(points, points[1:])]
        return out[::-1]
