"""An execution's stages from its ExecutedActionMetadata, as rows for a page."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cas.timestamps import is_set, seconds_of
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

# (stage, start field, end field), in the order they happen.
STAGES = (
    ("queued", "queued_timestamp", "worker_start_timestamp"),
    ("input fetch", "input_fetch_start_timestamp", "input_fetch_completed_timestamp"),
    ("execution", "execution_start_timestamp", "execution_completed_timestamp"),
    ("output upload", "output_upload_start_timestamp", "output_upload_completed_timestamp"),
    ("on the worker, in all", "worker_start_timestamp", "worker_completed_timestamp"),
)


def _seconds(ts: Timestamp) -> float | None:
    return seconds_of(ts) if is_set(ts) else None


def timeline(metadata: re_pb2.ExecutedActionMetadata) -> list[tuple[str, float, float | None]]:
    """(stage, start, seconds taken or None while it runs) for each stage that started."""
    rows = []
    for stage, start_field, end_field in STAGES:
        start = _seconds(getattr(metadata, start_field))
        if start is None:
            continue
        end = _seconds(getattr(metadata, end_field))
        rows.append((stage, start, None if end is None else max(0.0, end - start)))
    return rows
