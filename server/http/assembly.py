"""The HTTP port's application: ``/metrics`` and the console, over the server's parts."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from server.http.metrics_page import add_metrics_route
from server.http.site import HttpSite
from server.instances import InstanceRegistry
from server.metrics.families import ServerMetrics

if TYPE_CHECKING:
    from server.app import ExecutionParts


@dataclass(frozen=True)
class ConsoleSources:
    """What the pages read: the metrics, the instances' stores and the execution parts."""

    metrics: ServerMetrics
    instances: InstanceRegistry
    execution: ExecutionParts | None


def build_app(sources: ConsoleSources) -> web.Application:
    app = web.Application()
    add_metrics_route(app, sources.metrics.registry)
    return app


async def start_http(sock: socket.socket, sources: ConsoleSources) -> HttpSite:
    """Serve the application on ``sock`` (from ``HttpSite.bind``)."""
    return await HttpSite.start(build_app(sources), sock)
