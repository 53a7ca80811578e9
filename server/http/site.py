"""Run an aiohttp application on one address in the server's own event loop.

``HttpSite.start`` binds before it returns (port 0 picks one; ``port`` tells which)
and turns a bind failure into a one-line StartupError.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from aiohttp import web

from server.listen_errors import StartupError, bind_error

log = logging.getLogger("reapi.server.http")


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise StartupError(f"HTTP listen address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8981)")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class HttpSite:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}"

    @staticmethod
    def bind(address: str) -> socket.socket:
        """The listening socket, bound before anything else is opened, so that a taken
        port is one line and nothing to clean up."""
        host, port = split_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise bind_error("HTTP (metrics and console)", address, err) from None
        return sock

    @classmethod
    async def start(cls, app: web.Application, sock: socket.socket) -> HttpSite:
        """Serve ``app`` on a socket from ``bind``."""
        # No access log: a scrape every few seconds would bury the server's own lines.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        return cls(runner, host, port)

    async def stop(self) -> None:
        await self.runner.cleanup()
