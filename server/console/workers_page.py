"""``/workers``: every connected worker (bot session): its properties, slots,
health and the actions it runs now."""

from __future__ import annotations

from aiohttp import web

from server.console.dashboard import workers_table
from server.console.html import esc, page, table
from server.console.sources import SOURCES, ConsoleSources


async def workers(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    if sources.execution is None:
        return page("Workers", '<p class="muted">Remote execution is off on this server.</p>')
    farm = sources.execution.scheduler.farm()
    by_platform = table(["properties", "workers", "slots"],
                        ([esc(p), str(n), str(sum(w.capacity for w in farm.workers if w.offer == p))]
                         for p, n in sorted(farm.workers_by_platform().items())), "no worker is connected")
    return page("Workers", workers_table(farm) + "<h2>By platform</h2>" + by_platform)
