"""What a finished lease means: requeue, or an ExecuteResponse for the client.

A bot reports a ``google.rpc.Status`` and a result. INTERNAL, UNAVAILABLE and
UNKNOWN mean the bot failed, not the action (BuildGrid retries the first two; we
add UNKNOWN, which is what an unexpected crash looks like): the action is requeued.
Anything else is the action's outcome and goes to the client as it is, with the
server's own timestamps added.
"""

from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from cas.timestamps import timestamp_of

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.sessions import LeaseReport

WORKER_FAILURE_CODES = frozenset({code_pb2.INTERNAL, code_pb2.UNAVAILABLE, code_pb2.UNKNOWN})


def is_worker_failure(status: status_pb2.Status) -> bool:
    return status.code in WORKER_FAILURE_CODES


def is_cacheable(response: re_pb2.ExecuteResponse) -> bool:
    """Only clean successes go to the action cache (REv2: failures must not be cached)."""
    return response.status.code == code_pb2.OK and response.result.exit_code == 0


def status_response(code: int, message: str) -> re_pb2.ExecuteResponse:
    """An ExecuteResponse that carries only a status (cancellations, give-ups)."""
    return re_pb2.ExecuteResponse(status=status_pb2.Status(code=code, message=message))


def build_response(
    report: LeaseReport, bot_id: str, assigned_at: float, queued_at: float, now: float
) -> re_pb2.ExecuteResponse:
    """The client's ExecuteResponse for a lease ``bot_id`` was assigned at ``assigned_at``."""
    response = re_pb2.ExecuteResponse()
    if report.response is not None:
        response.CopyFrom(report.response)
    if report.status is not None and report.status.code != code_pb2.OK:
        response.status.CopyFrom(report.status)  # the lease's status is the bot's verdict
    response.cached_result = False
    metadata = response.result.execution_metadata
    metadata.queued_timestamp.CopyFrom(timestamp_of(queued_at))
    if not metadata.worker:
        metadata.worker = bot_id
    if not metadata.HasField("worker_start_timestamp"):
        metadata.worker_start_timestamp.CopyFrom(timestamp_of(assigned_at))
    if not metadata.HasField("worker_completed_timestamp"):
        metadata.worker_completed_timestamp.CopyFrom(timestamp_of(now))
    return response
