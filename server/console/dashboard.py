"""``/``: the farm at a glance: queue depth per platform, workers with their slots
and current actions, and throughput and hit rate over the last minutes."""

from __future__ import annotations

import time

from aiohttp import web

from server.console.html import digest_text, esc, page, q, table, when
from server.console.sources import SOURCES, ConsoleSources
from server.scheduler.farm import FarmSnapshot


def _card(label: str, value: str) -> str:
    return f'<div class="card"><div class="muted">{esc(label)}</div><div class="n">{esc(value)}</div></div>'


def workers_table(farm: FarmSnapshot) -> str:
    now = time.time()
    rows = []
    for worker in farm.workers:
        actions = "<br>".join(
            f'<a href="/operation/{q(r.operation)}"><code>{esc(digest_text(r.action_digest)[:16])}</code></a> '
            f'<span class="muted">{now - r.since:.0f} s</span>' for r in worker.running) or '<span class="muted">idle</span>'
        health = '<span class="ok">healthy</span>' if worker.healthy else '<span class="bad">unhealthy</span>'
        rows.append([f"<b>{esc(worker.bot_id)}</b>", esc(worker.offer), f"{len(worker.running)} / {worker.capacity}",
                     health, actions])
    return table(["bot id", "properties", "slots used", "health", "current actions"], rows, "no worker is connected")


def activity_table(sources: ConsoleSources) -> str:
    rows = []
    minutes = sources.recent.minutes()
    top = max((m.delta.requests for m in minutes), default=0) or 1
    for minute in minutes:
        d = minute.delta
        lookups = d.hits + d.misses
        rate = f"{100 * d.hits / lookups:.0f}%" if lookups else "-"
        bar = f'<span class="bar" style="width:{int(120 * d.requests / top)}px"></span>'
        rows.append([esc(when(minute.ended)), f"{d.requests:,.0f} {bar}", f"{d.executions:,.0f}",
                     f"{d.hits:,.0f} / {d.misses:,.0f}", rate, f"{d.errors:,.0f}"])
    return table(["interval ending", "requests", "executions", "cache hits / misses", "hit rate", "errors"], rows)


async def dashboard(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    body = []
    if sources.execution is not None:
        farm = sources.execution.scheduler.farm()
        slots = sum(w.capacity for w in farm.workers)
        minutes = sources.recent.minutes()
        now = minutes[0].delta if minutes else None
        lookups = (now.hits + now.misses) if now else 0
        rate = f"{100 * now.hits / lookups:.0f}%" if now and lookups else "-"
        body.append('<div class="cards">' + _card("queued", str(farm.queued_total)) +
                    _card("executing", str(farm.executing)) + _card("workers", str(len(farm.workers))) +
                    _card("slots busy", f"{farm.executing} / {slots}") + _card("hit rate (this minute)", rate) + "</div>")
        body.append("<h2>Queue depth per platform</h2>")
        body.append(table(["platform", "queued"], ([esc(p), str(n)] for p, n in sorted(farm.queued.items())),
                          "nothing is queued"))
        body.append("<h2>Workers</h2>" + workers_table(farm))
    else:
        body.append('<p class="muted">Remote execution is off on this server ([execution] enabled = false).</p>')
    body.append("<h2>Last minutes</h2>" + activity_table(sources))
    return page("Dashboard", "".join(body))
