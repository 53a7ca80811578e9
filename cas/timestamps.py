"""Seconds between two protobuf Timestamps, as server and worker both read them from
ExecutedActionMetadata (stage durations for metrics and logs)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def is_set(timestamp: Timestamp) -> bool:
    return bool(timestamp.seconds or timestamp.nanos)


def seconds_between(start: Timestamp, end: Timestamp) -> float | None:
    """``end - start`` in seconds; None unless both are set (an unset field reads as zero)."""
    if not is_set(start) or not is_set(end):
        return None
    return (end.seconds - start.seconds) + (end.nanos - start.nanos) / 1e9
