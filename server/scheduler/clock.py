"""Time and identifiers, injected so tests can drive lease expiry and retention exactly."""

from __future__ import annotations

import os
import time
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
    """32 lowercase hex digits (128 random bits): safe in resource names and gRPC
    metadata keys, and cheaper than building a uuid.UUID on every dispatch."""
    return os.urandom(16).hex()
