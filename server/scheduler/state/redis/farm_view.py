"""The farm as the Redis state shows it: a snapshot fetched by one script, refreshed
in the background.

``SchedulerState.farm()`` is synchronous (Prometheus collectors and the console read
it), so the Redis state answers with the last snapshot and starts a new fetch when
that one is older than FARM_REFRESH seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from server.scheduler.clock import Clock
from server.scheduler.farm import FarmSnapshot, RunningAction, WorkerView
from server.scheduler.platform import WorkerOffer
from server.scheduler.state.redis.catalog import Catalog
from server.scheduler.state.redis.codec import digest_of, text

log = logging.getLogger("reapi.scheduler.redis")

FARM_REFRESH = 2.0


class FarmView:
    def __init__(self, fetch: Callable[[], Awaitable[Any]], catalog: Catalog, clock: Clock) -> None:
        self._fetch = fetch  # runs the "farm" script
        self.catalog = catalog
        self.clock = clock
        self._snapshot = FarmSnapshot({}, 0, ())
        self._fetched_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> FarmSnapshot:
        now = self.clock.now()
        if self._task is None and abs(now - self._fetched_at) > FARM_REFRESH:
            self._fetched_at = now
            self._task = asyncio.create_task(self._refresh(), name="reapi-scheduler-farm")
        return self._snapshot

    async def _refresh(self) -> None:
        try:
            queued_reply, workers_reply = await self._fetch()
            queued = {(await self.catalog.requirements(text(rid))).describe(): int(n) for rid, n in queued_reply}
            offers: dict[str, str] = {}
            workers = []
            executing = 0
            for bot, name, oid, capacity, healthy, running_reply in workers_reply:
                oid = text(oid)
                if oid not in offers:
                    offers[oid] = ((await self.catalog.offers([oid])) or [WorkerOffer()])[0].describe()
                running = tuple(
                    RunningAction(text(op), digest_of(hash_, size, function), text(instance), float(at))
                    for op, hash_, size, function, instance, at in running_reply
                )
                executing += len(running)
                workers.append(WorkerView(text(bot), text(name), offers[oid], int(capacity), healthy == b"1", running))
            self._snapshot = FarmSnapshot(queued, executing, tuple(sorted(workers)))
        except Exception as exc:  # noqa: BLE001 - a page or scrape shows the last snapshot
            log.debug("fetching the farm snapshot failed: %s", exc)
        finally:
            self._task = None
