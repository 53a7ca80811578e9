"""Gauges of the farm, read from the scheduler when Prometheus scrapes:
``reapi_queued_actions`` and ``reapi_workers`` by platform, ``reapi_executing_actions``
and the slots the workers offer (``reapi_farm_slots``). Nothing is counted between scrapes.

``platform`` is the normalised requirement set of queued actions (``OSFamily=linux,
ISA=x86-64``) or the properties a worker offers: as many values as the farm has
kinds of machines, which is what an autoscaler per platform keys on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.scheduler.farm import FarmSnapshot


class FarmGauges(Collector):
    def __init__(self, snapshot: Callable[[], FarmSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        farm = self.snapshot()
        queued = GaugeMetricFamily("reapi_queued_actions", "Executions waiting for a worker, by required platform.",
                                   labels=["platform"])
        for platform, count in sorted(farm.queued.items()):
            queued.add_metric([platform], count)
        yield queued
        yield GaugeMetricFamily("reapi_executing_actions", "Executions leased to a worker now.", value=farm.executing)
        workers = GaugeMetricFamily("reapi_workers", "Connected workers (bot sessions), by offered platform.",
                                    labels=["platform"])
        slots = GaugeMetricFamily("reapi_farm_slots", "Actions the connected workers can run at once.",
                                  labels=["platform"])
        by_platform: dict[str, tuple[int, int]] = {}
        for worker in farm.workers:
            count, capacity = by_platform.get(worker.offer, (0, 0))
            by_platform[worker.offer] = (count + 1, capacity + worker.capacity)
        for platform, (count, capacity) in sorted(by_platform.items()):
            workers.add_metric([platform], count)
            slots.add_metric([platform], capacity)
        yield workers
        yield slots
