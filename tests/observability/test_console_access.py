"""The console's access rule: a token that may read, by Bearer header or HTTP Basic
password; /metrics open on loopback only. (The rule is given the server's real
authentication where [server.auth] is configured.)"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from server.console.access import metrics_open_on, require_read

TOKENS = {"reader-token": True, "writer-only": False}


def check(token: str | None) -> str | None:
    if token is None:
        return "no token was given"
    allowed = TOKENS.get(token)
    if allowed is None:
        return "unknown token"
    return None if allowed else "this token may not read"


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="content")


@pytest.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application(middlewares=[require_read(check, metrics_open=True)])
    app.router.add_get("/", ok)
    app.router.add_get("/metrics", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, await response.text(), response.headers.get("WWW-Authenticate", "")


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"me:{password}".encode()).decode()}


async def test_a_reader_gets_in_by_bearer_or_basic_others_are_asked_to_sign_in(site: str) -> None:
    assert (await fetch(f"{site}/", {"Authorization": "Bearer reader-token"}))[:2] == (200, "content")
    assert (await fetch(f"{site}/", basic("reader-token")))[:2] == (200, "content")
    status, body, challenge = await fetch(f"{site}/")
    assert status == 401 and "no token was given" in body and challenge.startswith("Basic ")
    status, body, _ = await fetch(f"{site}/", basic("writer-only"))
    assert status == 401 and "may not read" in body
    status, body, _ = await fetch(f"{site}/", {"Authorization": "Bearer nope"})
    assert status == 401 and "unknown token" in body


async def test_metrics_stay_open_on_loopback_only(site: str) -> None:
    assert (await fetch(f"{site}/metrics"))[0] == 200
    assert metrics_open_on("127.0.0.1") and metrics_open_on("::1")
    assert not metrics_open_on("0.0.0.0") and not metrics_open_on("10.0.0.5")
