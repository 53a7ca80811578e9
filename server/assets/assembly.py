"""Assemble the Remote Asset parts from their settings (called by server/app.py).

One function builds the object graph (policy -> network guard -> downloaders ->
fetcher), so the composition root only registers the two services and, once it
has bound its port, tells the guard (``AssetParts.serving_on``: fetches of the
server's own port are refused); ``AssetParts.aclose`` cancels downloads still
running and closes the HTTP client at shutdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from cas.store import BlobStore
from server.assets.archive import ArchiveUnpacker
from server.assets.config import AssetsConfig
from server.assets.fetcher import AssetFetcher
from server.assets.git import GitFetcher
from server.assets.guard import NetworkGuard, Resolve, system_resolve
from server.assets.http import HttpDownloader, new_session
from server.assets.index import AssetIndex, Clock
from server.assets.local_file import LocalFileReader
from server.assets.pusher import AssetPusher
from server.assets.spool import Spool


@dataclass
class AssetParts:
    fetcher: AssetFetcher
    pusher: AssetPusher
    session: aiohttp.ClientSession
    guard: NetworkGuard

    def serving_on(self, port: int) -> None:
        """The server listens on ``port``: fetches may not connect to it on this machine."""
        self.guard.own_ports.add(port)

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.session.close()


def build_assets(
    config: AssetsConfig, index_store: BlobStore, clock: Clock = time.time, resolve: Resolve = system_resolve
) -> AssetParts:
    """The fetcher and pusher over ``index_store``; must run inside the server's event loop.
    ``resolve`` turns names into addresses (tests give a resolver of their own)."""
    policy = config.policy
    if config.spool_dir is not None:
        config.spool_dir.mkdir(parents=True, exist_ok=True)
    spool = Spool(config.spool_dir, config.spool_memory_limit)
    guard = NetworkGuard(policy, resolve)
    session = new_session(guard)
    http = HttpDownloader(session, policy, guard, spool)
    index = AssetIndex(index_store, clock)
    fetcher = AssetFetcher(
        index,
        downloaders={"http": http, "https": http, "file": LocalFileReader(policy, spool)},
        unpacker=ArchiveUnpacker(spool, config.limits),
        git=GitFetcher(spool, guard, config.limits, git=config.git),
        default_timeout=config.default_timeout,
        max_timeout=config.max_timeout,
        clock=clock,
    )
    return AssetParts(fetcher, AssetPusher(index, clock, enabled=config.allow_push), session, guard)
