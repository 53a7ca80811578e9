"""The event loop the server runs on: uvloop by default, asyncio's own on request.

Every gRPC call costs the server a fixed amount of event-loop work (futures, callbacks,
the wake-ups from gRPC's own threads) before any of ours; for a small unary call such
as GetActionResult it is most of the call's CPU. uvloop (libuv, in C) does that work
for about a quarter less CPU than asyncio's pure-Python loop on this kind of host
(docs/BENCHMARKS.md, "Server CPU per call"). ``[server] event_loop = "asyncio"``
keeps the standard loop (e.g. to rule uvloop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Coroutine
from typing import Any


class EventLoop(enum.Enum):
    """``[server] event_loop``."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def run(main: Coroutine[Any, Any, None], loop: EventLoop) -> None:
    """Run ``main`` to completion on a new loop of the chosen kind."""
    if loop is EventLoop.UVLOOP:
        import uvloop  # a dependency; imported here so the asyncio choice never needs it

        uvloop.run(main)
    else:
        asyncio.run(main)
