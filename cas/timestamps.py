"""Protobuf Timestamps and Durations as float seconds, and back: one place for the
``seconds + nanos / 1e9`` arithmetic the services, scheduler and console all need
(stage durations from ExecutedActionMetadata, timeouts, expiry times)."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def is_set(timestamp: Timestamp) -> bool:
    return bool(timestamp.seconds or timestamp.nanos)


def seconds_between(start: Timestamp, end: Timestamp) -> float | None:
    """``end - start`` in seconds; None unless both are set (an unset field reads as zero)."""
    if not is_set(start) or not is_set(end):
        return None
    return (end.seconds - start.seconds) + (end.nanos - start.nanos) / 1e9


def seconds_of(value: Timestamp | Duration) -> float:
    """A Timestamp (seconds since the epoch) or a Duration as float seconds."""
    return value.seconds + value.nanos / 1e9


def timestamp_of(seconds: float) -> Timestamp:
    """A Timestamp of ``seconds`` since the epoch (to the nanosecond it can carry)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
