"""Time and identifiers, injected so tests can drive lease expiry and retention exactly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall time: it also stamps ExecutedActionMetadata)."""


class SystemClock:
    def now(self) -> float:
        return time.time()


IdFactory = Callable[[], str]


def random_id() -> str:
    """32 lowercase hex digits: safe in resource names and gRPC metadata keys."""
    return uuid.uuid4().hex
