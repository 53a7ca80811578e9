"""Who may see the console: with authentication configured, a caller whose token has
the ``read`` permission (the same tokens as the gRPC port, docs/SECURITY.md).

Scripts send ``Authorization: Bearer TOKEN``; a browser is asked for HTTP Basic
credentials (any user name, the token as the password), which it then repeats on
every request. ``/metrics`` stays open on a loopback address, where only this host
can reach it, and asks for the same token elsewhere (Prometheus sends one with
``authorization: credentials_file``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.console.html import esc, page

# token (None: the request carried none) -> None if it may read, else why not.
ReadCheck = Callable[[str | None], str | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REALM = 'Basic realm="reapi console", charset="UTF-8"'
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None


def require_read(check: ReadCheck, metrics_open: bool) -> Middleware:
    """An aiohttp middleware refusing requests whose token may not read."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if metrics_open and request.path == "/metrics":
            return await handler(request)
        refusal = check(token_of(request))
        if refusal is None:
            return await handler(request)
        response = page("Sign in", f'<p class="bad">{esc(refusal)}</p><p>The console needs a token with the '
                                   "<code>read</code> permission: give any user name and the token as the "
                                   "password.</p>", status=401)
        response.headers["WWW-Authenticate"] = REALM
        return response

    return guard


def metrics_open_on(host: str) -> bool:
    return host in LOOPBACK_HOSTS
