"""``/operations``: the operations the scheduler knows (running, queued, and finished
ones for ``[execution] operation_retention``), newest first, with filters."""

from __future__ import annotations

from aiohttp import web

from server.console.html import digest_text, esc, page, q, table
from server.console.sources import SOURCES, ConsoleSources
from server.scheduler.interface import OperationFilter
from server.scheduler.operation import OperationState, Stage

STAGE_NAMES = {"queued": Stage.QUEUED, "executing": Stage.EXECUTING, "completed": Stage.COMPLETED}
SHOWN = 500


def outcome(state: OperationState) -> str:
    if not state.done or state.response is None:
        return '<span class="muted">-</span>'
    response = state.response
    if response.status.code:
        return f'<span class="bad">{esc(response.status.message[:80] or "failed")}</span>'
    if response.cached_result:
        return '<span class="ok">cached</span>'
    code = response.result.exit_code
    return f'<span class="ok">exit 0</span>' if code == 0 else f'<span class="bad">exit {code}</span>'


def filter_form(stage: str, instance: str, action: str) -> str:
    options = "".join(f'<option value="{s}"{" selected" if s == stage else ""}>{s or "any stage"}</option>'
                      for s in ("", *STAGE_NAMES))
    return (f'<form class="inline" method="get" action="/operations"><select name="stage">{options}</select>'
            f'<input type="text" name="instance" placeholder="instance name" value="{esc(instance)}" style="width:12em">'
            f'<input type="text" name="action" placeholder="action digest (prefix)" value="{esc(action)}"'
            f' style="width:24em"><button type="submit">Filter</button></form>')


async def matching(request: web.Request) -> list[OperationState]:
    """The operations the query's filters (stage, instance, action) select, newest first."""
    sources = request.app[SOURCES]
    assert sources.execution is not None
    stage = request.query.get("stage", "")
    instance = request.query.get("instance", "")
    action = request.query.get("action", "").strip().lower()
    where = OperationFilter(stages=frozenset({STAGE_NAMES[stage]}) if stage in STAGE_NAMES else None)
    states: list[OperationState] = []
    token = ""
    while True:
        found, token = await sources.execution.scheduler.list_operations(instance or None, where, 1000, token)
        states.extend(s for s in found if not action or s.action_digest.hash.startswith(action.split("/")[0]))
        if not token:
            break
    states.reverse()
    return states


async def operations_api(request: web.Request) -> web.Response:
    """``/api/operations``: the same list as JSON, for scripts."""
    if request.app[SOURCES].execution is None:
        return web.json_response([])
    return web.json_response([
        {"name": s.name, "instance": s.instance_name, "action_digest": digest_text(s.action_digest),
         "stage": s.stage.name.lower(), "done": s.done,
         "cached": bool(s.response is not None and s.response.cached_result)}
        for s in await matching(request)])


async def operations(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    if sources.execution is None:
        return page("Operations", '<p class="muted">Remote execution is off on this server.</p>')
    stage = request.query.get("stage", "")
    instance = request.query.get("instance", "")
    action = request.query.get("action", "").strip().lower()
    states = await matching(request)
    rows = [[f'<a href="/operation/{q(s.name)}">{esc(s.name)}</a>', esc(s.instance_name or '""'),
             f"<code>{esc(digest_text(s.action_digest))}</code>", esc(s.stage.name.lower()), outcome(s)]
            for s in states[:SHOWN]]
    more = f'<p class="muted">showing the newest {SHOWN} of {len(states)}</p>' if len(states) > SHOWN else ""
    return page("Operations", filter_form(stage, instance, action) + more +
                table(["operation", "instance", "action", "stage", "outcome"], rows, "no operation matches"))
