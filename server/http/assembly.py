"""The HTTP port's application: ``/metrics`` and the console, over the server's parts."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from aiohttp import web

from server.console.access import ReadCheck, metrics_open_on, require_read
from server.console.recent import RecentActivity
from server.console.routes import add_console_routes
from server.console.sources import ConsoleSources
from server.http.metrics_page import add_metrics_route
from server.http.site import HttpSite
from server.instances import InstanceRegistry
from server.metrics.families import ServerMetrics
from server.metrics.farm_gauges import FarmGauges

if TYPE_CHECKING:
    from server.execution_parts import ExecutionParts


def build_app(sources: ConsoleSources, read_check: ReadCheck | None = None, host: str = "127.0.0.1") -> web.Application:
    """``read_check``: with authentication configured, who may read (server/console/access.py)."""
    guard = [require_read(read_check, metrics_open_on(host))] if read_check is not None else []
    app = web.Application(middlewares=guard)
    if sources.execution is not None:
        sources.metrics.registry.register(FarmGauges(sources.execution.scheduler.farm))
    add_metrics_route(app, sources.metrics.registry)
    add_console_routes(app, sources)

    async def start_sampling(app: web.Application) -> None:
        sources.recent.start()

    async def stop_sampling(app: web.Application) -> None:
        await sources.recent.stop()

    app.on_startup.append(start_sampling)
    app.on_cleanup.append(stop_sampling)
    return app


async def start_http(sock: socket.socket, metrics: ServerMetrics, instances: InstanceRegistry,
                     execution: ExecutionParts | None, read_check: ReadCheck | None = None) -> HttpSite:
    """Serve metrics and the console on ``sock`` (from ``HttpSite.bind``)."""
    sources = ConsoleSources(metrics, instances, execution, RecentActivity(metrics))
    host = sock.getsockname()[0]
    return await HttpSite.start(build_app(sources, read_check, host), sock)
