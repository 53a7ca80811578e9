"""``/ac``: look an action digest up in an instance's action cache and show the
result (exit code, outputs to download, stdout and stderr)."""

from __future__ import annotations

from aiohttp import web

from cas.digest import Digest
from server.console.html import blob_url, esc, page, q
from server.console.operation_page import output_text, outputs_section
from server.console.sources import SOURCES, ConsoleSources


def ac_form(instance: str, action: str) -> str:
    return (f'<form class="inline" method="get" action="/ac">'
            f'<input type="text" name="instance" placeholder="instance" value="{esc(instance)}" style="width:10em">'
            f'<input type="text" name="action" placeholder="action digest HASH/SIZE" value="{esc(action)}">'
            f'<button type="submit">Look up</button></form>')


async def action_cache(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    instance_name = request.query.get("instance", "")
    given = request.query.get("action", "").strip()
    body = ac_form(instance_name, given)
    if not given:
        return page("Action cache", body)
    hash_, _, size = given.partition("/")
    digest = Digest.parse(hash_, int(size) if size.isdigit() else -1)
    instance = sources.instances.get(instance_name)
    result = await instance.action_cache.get(digest)
    if result is None:
        return page("Action cache", body + f'<p class="bad">no complete result for {esc(given)} (a miss)</p>')
    function = int(digest.function)
    body += (f'<p>exit code <b>{result.exit_code}</b>; <a href="{blob_url("action", instance_name, digest)}">'
             f"the Action</a>; worker {esc(result.execution_metadata.worker or '-')}</p>")
    for which in ("stdout", "stderr"):
        text = await output_text(instance.cas, getattr(result, f"{which}_raw"), getattr(result, f"{which}_digest"),
                                 function)
        body += f"<h2>{which}</h2><pre>{esc(text)}</pre>"
    body += outputs_section(result, instance_name, function)
    body += f'<p><a href="/operations?action={q(digest.hash)}">operations of this action</a></p>'
    return page("Action cache", body)
