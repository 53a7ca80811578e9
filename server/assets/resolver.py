"""The HTTP client's resolver: names are resolved and checked by the NetworkGuard.

aiohttp connects to exactly the addresses its resolver returns, so checking them
here leaves no gap between the check and the connection for DNS rebinding to use.
aiohttp never asks its resolver about hosts written as addresses; the downloader
checks those itself (``NetworkGuard.check_literal``) before each request.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from server.assets.guard import NetworkGuard

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class GuardedResolver(AbstractResolver):
    """Resolves through ``guard``: AddressRefused (not an OSError) stops the request before it connects."""

    def __init__(self, guard: NetworkGuard) -> None:
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self.guard.resolve(host, port)
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        results: list[ResolveResult] = [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": _NUMERIC,
            }
            for address in addresses
            if wanted is None or address.version == wanted
        ]
        if not results:
            raise OSError(f"cannot resolve {host}: no address of the wanted family")
        return results

    async def close(self) -> None:
        pass
