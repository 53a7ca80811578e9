"""deploy/monitoring/: every metric the Grafana dashboard and the autoscaler name
is one the server or the worker exports, so the examples cannot drift from the code."""

from __future__ import annotations

import json
import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cas.memory import MemoryStore
from server.metrics.families import ServerMetrics
from server.metrics.farm_gauges import FarmGauges
from server.metrics.store_gauges import StoreGauges
from server.scheduler.farm import FarmSnapshot, WorkerView
from tests.conftest import REPO_ROOT
from worker.metrics import WorkerGauges, WorkerMetrics

MONITORING = REPO_ROOT / "deploy" / "monitoring"
NAME = re.compile(r"\breapi_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exported() -> set[str]:
    server = ServerMetrics()
    server.registry.register(FarmGauges(lambda: FarmSnapshot(
        {"OSFamily=linux": 1}, 0, (WorkerView("b", "s", "OSFamily=linux", 2, True, ()),))))
    server.registry.register(StoreGauges({"cas": MemoryStore(1 << 20, "cas")}))
    worker = WorkerMetrics()
    worker.watch(WorkerGauges(lambda: 1, lambda: 0, lambda: 0, lambda: 0))
    names: set[str] = set()
    for registry in (server.registry, worker.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names.update(sample.name for sample in family.samples)
            names.add(family.name)
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_dashboard_and_autoscaler_name_only_exported_metrics() -> None:
    known = exported()
    known_bases = {base(n) for n in known}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {n for e in expressions for n in NAME.findall(e)}
    named |= set(NAME.findall((MONITORING / "worker-autoscaler.yaml").read_text()))
    assert named, "the examples name no metric"
    unknown = sorted(n for n in named if n not in known and base(n) not in known_bases)
    assert not unknown, f"not exported by server or worker: {unknown}"


def test_the_issue_families_are_exported() -> None:
    wanted = {
        "reapi_rpc_duration_seconds", "reapi_cas_bytes", "reapi_cas_blobs", "reapi_action_cache_lookups",
        "reapi_queued_actions", "reapi_executing_actions", "reapi_workers", "reapi_execution_stage_duration_seconds",
        "reapi_retries", "reapi_store_evicted_blob_age_seconds", "reapi_worker_actions",
        "reapi_worker_input_bytes_fetched", "reapi_worker_cache_bytes", "reapi_worker_action_duration_seconds",
        "reapi_worker_slots", "reapi_worker_busy_slots", "reapi_store_size_bytes", "reapi_store_capacity_bytes",
        "reapi_store_evictions", "reapi_executions", "reapi_farm_slots",
    }
    assert wanted <= {base(n) for n in exported()}
