"""Every URL of the console, and the one place a ReapiError becomes an error page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from cas.errors import NotFound, ReapiError
from server.console import (
    ac_page, cas_pages, dashboard, explain_page, live_logs, operation_page, operations_page, workers_page,
)
from server.console.html import esc, page
from server.console.sources import SOURCES, ConsoleSources

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ReapiError as err:  # a bad digest or instance name in the URL, a missing blob
        status = 404 if isinstance(err, NotFound) else 400
        return page("Cannot show this", f'<p class="bad">{esc(err.message)}</p>', status=status)


def add_console_routes(app: web.Application, sources: ConsoleSources) -> None:
    app[SOURCES] = sources
    app.middlewares.append(error_pages)
    r = app.router
    r.add_get("/", dashboard.dashboard)
    r.add_get("/workers", workers_page.workers)
    r.add_get("/operations", operations_page.operations)
    r.add_get("/api/operations", operations_page.operations_api)
    r.add_get("/operation/{name:.+}", operation_page.operation)
    r.add_get("/live/{which:stdout|stderr}/{name:.+}", live_logs.live_log)
    r.add_get("/cas", cas_pages.cas_home)
    r.add_get("/cas/directory/{hash}/{size:\\d+}", cas_pages.directory_page)
    r.add_get("/cas/tree/{hash}/{size:\\d+}", cas_pages.tree_page)
    r.add_get("/cas/file/{hash}/{size:\\d+}", cas_pages.file_page)
    r.add_get("/cas/blob/{hash}/{size:\\d+}", cas_pages.blob_download)
    r.add_get("/cas/action/{hash}/{size:\\d+}", cas_pages.action_page)
    r.add_get("/ac", ac_page.action_cache)
    r.add_get("/explain/{name:.+}", explain_page.explain_page)
    r.add_get("/api/explain/{name:.+}", explain_page.explain_api)
