"""The server's periodic INFO line: what happened in the last interval.

    activity in the last 60 s: 1,204 requests (3 errors), action cache 412 hits / 38 misses (92% hits),
    38 executions finished; now 2 queued, 1 executing, 3 workers

Read from the metrics (so it needs them on, as they are in the zero-config server);
nothing is logged for an interval in which nothing happened and nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from server.metrics.totals import Totals

if TYPE_CHECKING:
    from server.app import ReapiServer

log = logging.getLogger("reapi.server.activity")

INTERVAL_S = 60.0


def describe(delta: Totals, interval: float, farm: str) -> str:
    lookups = delta.hits + delta.misses
    rate = f" ({100 * delta.hits / lookups:.0f}% hits)" if lookups else ""
    return (f"activity in the last {interval:g} s: {delta.requests:,.0f} requests ({delta.errors:,.0f} errors), "
            f"action cache {delta.hits:,.0f} hits / {delta.misses:,.0f} misses{rate}, "
            f"{delta.executions:,.0f} executions finished{farm}")


async def report_forever(server: ReapiServer, interval: float = INTERVAL_S) -> None:
    metrics = server.metrics
    assert metrics is not None
    before = Totals.read(metrics)
    while True:
        await asyncio.sleep(interval)
        now = Totals.read(metrics)
        delta = now - before
        before = now
        farm = ""
        busy = False
        if server.execution is not None:
            snapshot = server.execution.scheduler.farm()
            queued, workers = snapshot.queued_total, len(snapshot.workers)
            farm = f"; now {queued} queued, {workers} workers"
            busy = bool(queued)
        if delta.requests or busy:
            log.info("%s", describe(delta, interval, farm))


def start_activity_log(server: ReapiServer) -> asyncio.Task[None] | None:
    if server.metrics is None:
        return None
    return asyncio.create_task(report_forever(server), name="reapi-activity-log")
