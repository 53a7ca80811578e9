"""``/explain/NAME``: why an executed action missed the cache, against the most
recent earlier action that produced the same thing; ``/api/explain/NAME`` is the
same as JSON for scripts."""

from __future__ import annotations

from aiohttp import web

from server.console.html import blob_url, digest_text, esc, not_found, page, q, table
from server.console.sources import SOURCES
from server.explain.explainer import Explanation, explain


async def _explanation(request: web.Request) -> Explanation | str:
    sources = request.app[SOURCES]
    name = request.match_info["name"]
    history = sources.execution.history if sources.execution is not None else None
    if history is None:
        return "remote execution is off on this server"
    found = await explain(history, sources.instances, name)
    if found is None:
        return (f"operation {name!r} did not execute on this server since it started (a cache hit, "
                "or an operation it no longer remembers)")
    return found


async def explain_api(request: web.Request) -> web.Response:
    found = await _explanation(request)
    if isinstance(found, str):
        return web.json_response({"error": found}, status=404)
    return web.json_response(found.to_json())


async def explain_page(request: web.Request) -> web.Response:
    found = await _explanation(request)
    if isinstance(found, str):
        return not_found(found)
    instance = found.operation.rsplit("/operations/", 1)[0] if "/operations/" in found.operation else ""
    body = [f'<p>operation <a href="/operation/{q(found.operation)}">{esc(found.operation)}</a>, action '
            f'<a href="{blob_url("action", instance, found.action_digest)}"><code>'
            f"{esc(digest_text(found.action_digest))}</code></a></p>",
            f"<p>compared with the most recent earlier action with {esc(found.matched_by)}"]
    if found.previous is not None:
        body.append(f': <a href="{blob_url("action", instance, found.previous)}"><code>'
                    f"{esc(digest_text(found.previous))}</code></a>")
    body.append("</p>")
    if found.note:
        body.append(f'<p class="muted">{esc(found.note)}</p>')
    diff = found.diff
    if diff is not None:
        for title, lines in (("Arguments", diff.arguments), ("Environment", diff.environment),
                             ("Platform", diff.platform), ("Other", diff.other)):
            if lines:
                body.append(f"<h2>{title}</h2><ul>" + "".join(f"<li><code>{esc(x)}</code></li>" for x in lines) + "</ul>")
        body.append("<h2>Input files</h2>" + table(
            ["path", "change", "before", "after"],
            ([f"<code>{esc(c.path)}</code>", esc(c.change), f"<code>{esc(c.before)}</code>",
              f"<code>{esc(c.after)}</code>"] for c in diff.inputs), "no input file differs"))
        if diff.unreadable:
            body.append(f'<p class="muted">not compared (no longer in the CAS): {esc(", ".join(diff.unreadable))}</p>')
    body.append(f'<p class="muted">as JSON: <a href="/api/explain/{q(found.operation)}">/api/explain/…</a></p>')
    return page("Why did this miss the cache?", "".join(body))
