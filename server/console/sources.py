"""What the console's pages read: the server's parts, passed in once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from server.console.recent import RecentActivity
from server.instances import InstanceRegistry
from server.metrics.families import ServerMetrics

if TYPE_CHECKING:
    from server.execution_parts import ExecutionParts


@dataclass(frozen=True)
class ConsoleSources:
    metrics: ServerMetrics
    instances: InstanceRegistry
    execution: ExecutionParts | None
    recent: RecentActivity


SOURCES = web.AppKey("sources", ConsoleSources)
