"""The server's metric families, named by Prometheus conventions (base units,
``_total`` counters, ``_seconds`` and ``_bytes``) with bounded label sets: gRPC
method names and codes, fixed directions, results and stages, store names from the
config, platforms from the workers' requirement sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# From a cached GetActionResult (~0.5 ms) to a long Execute or a held bot call (30 s+).
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               300.0)
# Stages of an execution: from a millisecond queue wait to hour-long tests.
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# How long a blob lived before eviction: minutes (a cache far too small) to weeks.
AGE_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0,
               30 * 86400.0)

STAGES = ("queued", "input_fetch", "execution", "output_upload")


class ServerMetrics:
    """Every family the server exports, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc_duration = Histogram(
            "reapi_rpc_duration_seconds", "Time from a call's arrival to its last response, by gRPC method and code.",
            ["method", "code"], buckets=RPC_BUCKETS, registry=r)
        self.cas_bytes = Counter(
            "reapi_cas_bytes", "Bytes read from and written to the CAS of the served instances.",
            ["direction"], registry=r)
        self.cas_blobs = Counter(
            "reapi_cas_blobs", "Blobs read from and written to the CAS of the served instances.",
            ["direction"], registry=r)
        self.action_cache_lookups = Counter(
            "reapi_action_cache_lookups", "Action cache lookups (GetActionResult and Execute's own), by result.",
            ["result"], registry=r)
        self.stage_duration = Histogram(
            "reapi_execution_stage_duration_seconds",
            "Stages of finished executions, from their ExecutedActionMetadata.",
            ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.executions = Counter(
            "reapi_executions", "Finished executions, by outcome (ok, exit_nonzero, or the gRPC code).",
            ["outcome"], registry=r)
        self.retries = Counter(
            "reapi_retries", "Executions put back in the queue after a worker failed or vanished.", registry=r)
        self.evicted_blob_age = Histogram(
            "reapi_store_evicted_blob_age_seconds",
            "How long evicted values had gone unused (the cache's real lifetime), by store.",
            ["store"], buckets=AGE_BUCKETS, registry=r)
        # Children made once: labels() costs a lock and a dict look-up per call.
        self.cas_read_bytes = self.cas_bytes.labels("read")
        self.cas_write_bytes = self.cas_bytes.labels("write")
        self.cas_read_blobs = self.cas_blobs.labels("read")
        self.cas_write_blobs = self.cas_blobs.labels("write")
        self.ac_hits = self.action_cache_lookups.labels("hit")
        self.ac_misses = self.action_cache_lookups.labels("miss")
        for result in ("hit", "miss"):
            self.action_cache_lookups.labels(result)
        for stage in STAGES:
            self.stage_duration.labels(stage)
