"""A real HTTP origin on 127.0.0.1 for download tests (the Remote Asset API, Bazel).

It runs http.server in a background thread, so it answers the test's own event loop
and separate processes (Bazel, reapi-server) alike. Routes can serve bytes or a file
(with sendfile, fast enough for benchmarks), require headers (401 otherwise), answer
a fixed status, redirect, answer late (``delay``), or stall until the origin stops
(for timeout tests);
``serve_directory`` exposes a directory tree (a bare git repository for git's dumb
HTTP protocol). Every request is recorded with its headers.

    with HttpOrigin() as origin:
        origin.serve("/a.txt", b"hello", require_headers={"Authorization": "Bearer t"})
        url = origin.url("/a.txt")
"""

from __future__ import annotations

import http.server
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    file: Path | None = None
    status: int = 200
    require_headers: dict[str, str] = field(default_factory=dict)
    redirect_to: str | None = None
    stall: bool = False
    delay: float = 0.0  # seconds to wait before answering (a slow origin)
    content_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    origin: HttpOrigin  # set on the per-origin subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        self.origin._record(RecordedRequest(self.path, {k: v for k, v in self.headers.items()}))
        route = self.origin._route(path)
        if route is None:
            self._reply(404, b"not found\n")
            return
        for name, value in route.require_headers.items():
            if self.headers.get(name) != value:
                self._reply(401, f"missing or wrong header {name}\n".encode())
                return
        if route.delay:
            self.origin._stopping.wait(route.delay)
        if route.stall:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.flush()
            self.origin._stopping.wait()
            return
        if route.redirect_to is not None:
            self.send_response(route.status if 300 <= route.status < 400 else 302)
            self.send_header("Location", route.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.file is not None:
            size = route.file.stat().st_size
            self.send_response(route.status)
            self.send_header("Content-Length", str(size))
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.end_headers()
            with route.file.open("rb") as f:
                self.connection.sendfile(f)
            return
        if not route.content_length:
            self.send_response(route.status)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(route.body)
            self.close_connection = True
            return
        self._reply(route.status, route.body, route.headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # git's dumb protocol opens many connections at once


class HttpOrigin:
    """Start with ``start()`` (or ``with``); stop with ``stop()``: later requests are refused."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._directories: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        handler = type("OriginHandler", (_Handler,), {"origin": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-origin", daemon=True)
        self.port = int(self._server.server_address[1])

    def start(self) -> HttpOrigin:
        self._thread.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes = b"", **options: Any) -> str:
        """Add a route; returns its URL. Options are Route fields."""
        with self._lock:
            self._routes[path] = Route(body=body, **options)
        return self.url(path)

    def serve_file(self, path: str, file: Path, **options: Any) -> str:
        return self.serve(path, file=file, **options)

    def serve_directory(self, prefix: str, directory: Path) -> str:
        """Serve every file under ``directory`` at ``prefix/<relative path>``."""
        with self._lock:
            self._directories[prefix.rstrip("/")] = directory
        return self.url(prefix.rstrip("/"))

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _route(self, path: str) -> Route | None:
        with self._lock:
            route = self._routes.get(path)
            if route is not None:
                return route
            for prefix, directory in self._directories.items():
                if path.startswith(prefix + "/"):
                    candidate = (directory / path[len(prefix) + 1 :]).resolve()
                    if candidate.is_file() and str(candidate).startswith(str(directory.resolve()) + os.sep):
                        return Route(file=candidate)
        return None

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpOrigin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
