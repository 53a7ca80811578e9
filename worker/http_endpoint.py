"""The worker's HTTP port: ``GET /metrics`` for Prometheus (``--http-listen``).

A bind failure (the port taken) is a one-line error, as on the server.
"""

from __future__ import annotations

import errno
import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cas.cli import StartupError
from cas.config import ConfigError


class MetricsEndpoint:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    @classmethod
    async def start(cls, registry: CollectorRegistry, address: str) -> MetricsEndpoint:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--http-listen {address!r} is not HOST:PORT (e.g. 0.0.0.0:8982)")
        host = host.strip("[]") or "0.0.0.0"
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            why = "the address is already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise StartupError(f"cannot listen on {address} for HTTP (metrics): {why}") from None

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return cls(runner, sock.getsockname()[1])

    async def stop(self) -> None:
        await self.runner.cleanup()
