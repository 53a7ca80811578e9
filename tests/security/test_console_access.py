"""The HTTP console asks for the same tokens as the gRPC port: one that may read."""

from __future__ import annotations

import aiohttp

from tests.security.conftest import FarmFactory
from tests.support.tokens import TokenFile


async def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


async def test_the_console_takes_a_token_that_may_read(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    reader = token_file.add("developers", ["read"])
    writer = token_file.add("uploader", ["write"])
    async with farm_factory(http_listen="127.0.0.1:0") as farm:
        assert farm.server.http is not None
        url = farm.server.http.url + "/"
        assert (await get(url, reader))[0] == 200
        status, body = await get(url, writer)
        assert status == 401 and "identity &#x27;uploader&#x27; (token) lacks the read permission" in body, body
        status, body = await get(url)
        assert status == 401 and "no token, and anonymous callers may not read" in body
        status, body = await get(url, "a-token-nobody-has")
        assert status == 401 and "unknown token" in body
        assert (await get(farm.server.http.url + "/metrics"))[0] == 200  # open on loopback
