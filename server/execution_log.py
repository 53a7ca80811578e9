"""One INFO line per execution a worker finished, and the execution metrics
(``reapi_executions_total``, ``reapi_execution_stage_duration_seconds``,
``reapi_retries_total``) when metrics are on.

    executed 3f2a.../142 on worker-1: exit 0 in 0.84 s (queued 0.01 s, inputs 0.02 s, run 0.79 s, outputs 0.01 s)
"""

from __future__ import annotations

import logging

from google.protobuf.timestamp_pb2 import Timestamp

from cas.timestamps import seconds_between
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.metrics.families import ServerMetrics
from server.scheduler.operation import PreparedAction

log = logging.getLogger("reapi.executions")

_CODE_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND", 7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}


def _between(start: Timestamp, end: Timestamp) -> float | None:
    seconds = seconds_between(start, end)
    return None if seconds is None else max(0.0, seconds)


def stages(metadata: re_pb2.ExecutedActionMetadata) -> dict[str, float]:
    m = metadata
    pairs = {
        "queued": (m.queued_timestamp, m.worker_start_timestamp),
        "input_fetch": (m.input_fetch_start_timestamp, m.input_fetch_completed_timestamp),
        "execution": (m.execution_start_timestamp, m.execution_completed_timestamp),
        "output_upload": (m.output_upload_start_timestamp, m.output_upload_completed_timestamp),
    }
    return {stage: s for stage, (a, b) in pairs.items() if (s := _between(a, b)) is not None}


def outcome(response: re_pb2.ExecuteResponse) -> str:
    if response.status.code:
        return _CODE_NAMES.get(response.status.code, "UNKNOWN")
    return "ok" if response.result.exit_code == 0 else "exit_nonzero"


class ExecutionLog:
    """An ExecutionObserver (server/scheduler/observer.py)."""

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self.metrics = metrics

    def finished(self, action: PreparedAction, response: re_pb2.ExecuteResponse) -> None:
        metadata = response.result.execution_metadata
        taken = stages(metadata)
        if self.metrics is not None:
            self.metrics.executions.labels(outcome(response)).inc()
            for stage, seconds in taken.items():
                self.metrics.stage_duration.labels(stage).observe(seconds)
        if log.isEnabledFor(logging.INFO):
            if response.status.code:
                result = f"{outcome(response)}: {response.status.message}"
            else:
                result = f"exit {response.result.exit_code}"
            total = _between(metadata.worker_start_timestamp, metadata.worker_completed_timestamp)
            parts = ", ".join(f"{name.replace('_', ' ')} {taken[key]:.2f} s" for key, name in (
                ("queued", "queued"), ("input_fetch", "inputs"), ("execution", "run"), ("output_upload", "outputs"))
                if key in taken)
            instance = f" for instance {action.instance_name!r}" if action.instance_name else ""
            log.info("executed %s%s on %s: %s%s (%s)", action.action_digest, instance, metadata.worker or "?",
                     result, f" in {total:.2f} s" if total is not None else "", parts)

    def retried(self, action: PreparedAction, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.inc()
        log.info("requeued %s: %s", action.action_digest, reason)
