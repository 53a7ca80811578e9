"""The worker's Prometheus metrics, on its own HTTP port (``--http-listen``).

Counted as actions finish (``observe``): ``reapi_worker_actions_total`` by status
(``ok``, ``exit_nonzero`` or the gRPC code of a failed execution: a bounded set) and
``reapi_worker_action_duration_seconds`` by stage, from the ExecutedActionMetadata
the worker itself stamped. Read at scrape time, so they cost nothing between
scrapes: the local cache's size and the bytes it fetched, slot usage, and the input
subtrees made and mounted (worker/input_trees.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cas.timestamps import seconds_between
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
STAGES = ("input_fetch", "execution", "output_upload", "total")

_CODE_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
    11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


def status_of(response: re_pb2.ExecuteResponse) -> str:
    if response.status.code:
        return _CODE_NAMES.get(response.status.code, "UNKNOWN")
    return "ok" if response.result.exit_code == 0 else "exit_nonzero"




def stage_durations(metadata: re_pb2.ExecutedActionMetadata) -> dict[str, float]:
    """Each stage the metadata has both ends of, in seconds."""
    m = metadata
    pairs = {
        "input_fetch": (m.input_fetch_start_timestamp, m.input_fetch_completed_timestamp),
        "execution": (m.execution_start_timestamp, m.execution_completed_timestamp),
        "output_upload": (m.output_upload_start_timestamp, m.output_upload_completed_timestamp),
        "total": (m.worker_start_timestamp, m.worker_completed_timestamp),
    }
    out = {}
    for stage, (start, end) in pairs.items():
        value = seconds_between(start, end)
        if value is not None and value >= 0:
            out[stage] = value
    return out


@dataclass
class WorkerGauges:
    """Where the scrape-time values come from (callables, read only when scraped)."""

    slots: Callable[[], int]
    busy_slots: Callable[[], int]
    cache_bytes: Callable[[], int]
    fetched_bytes: Callable[[], int]
    subtrees_built: Callable[[], int] = lambda: 0  # InputTrees (bwrap only)
    subtrees_mounted: Callable[[], int] = lambda: 0


class _ScrapeTimeCollector(Collector):
    def __init__(self, gauges: WorkerGauges) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        g = self.gauges
        yield GaugeMetricFamily("reapi_worker_slots", "Actions this worker runs at once (its concurrency).",
                                value=g.slots())
        yield GaugeMetricFamily("reapi_worker_busy_slots", "Slots running an action now.", value=g.busy_slots())
        yield GaugeMetricFamily("reapi_worker_cache_bytes", "Bytes held in the worker's local CAS cache.",
                                value=g.cache_bytes())
        yield CounterMetricFamily("reapi_worker_input_bytes_fetched",
                                  "Bytes the worker's cache fetched from the server's CAS.", value=g.fetched_bytes())
        yield CounterMetricFamily("reapi_worker_input_subtrees_built",
                                  "Input subtrees made once to be mounted read-only into actions.",
                                  value=g.subtrees_built())
        yield CounterMetricFamily("reapi_worker_input_subtrees_mounted",
                                  "Input subtrees mounted into actions instead of linked file by file.",
                                  value=g.subtrees_mounted())


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.actions = Counter("reapi_worker_actions", "Actions this worker finished, by status.", ["status"],
                               registry=self.registry)
        self.action_duration = Histogram(
            "reapi_worker_action_duration_seconds", "Stages of the actions this worker ran.", ["stage"],
            buckets=STAGE_BUCKETS, registry=self.registry)
        for status in ("ok", "exit_nonzero"):
            self.actions.labels(status)
        self._stages = {stage: self.action_duration.labels(stage) for stage in STAGES}

    def watch(self, gauges: WorkerGauges) -> None:
        self.registry.register(_ScrapeTimeCollector(gauges))

    def observe(self, response: re_pb2.ExecuteResponse) -> None:
        self.actions.labels(status_of(response)).inc()
        for stage, seconds in stage_durations(response.result.execution_metadata).items():
            self._stages[stage].observe(seconds)
