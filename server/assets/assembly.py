"""Assemble the Remote Asset parts from their settings (called by server/app.py).

One function builds the object graph (policy -> downloaders -> fetcher), so the
composition root only registers the two services; ``AssetParts.aclose`` cancels
downloads still running and closes the HTTP client at shutdown.
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

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.session.close()


def build_assets(config: AssetsConfig, index_store: BlobStore, clock: Clock = time.time) -> AssetParts:
    """The fetcher and pusher over ``index_store``; must run inside the server's event loop."""
    policy = config.policy
    if config.spool_dir is not None:
        config.spool_dir.mkdir(parents=True, exist_ok=True)
    spool = Spool(config.spool_dir, config.spool_memory_limit)
    session = new_session()
    http = HttpDownloader(session, policy, spool)
    index = AssetIndex(index_store, clock)
    fetcher = AssetFetcher(
        index,
        downloaders={"http": http, "https": http, "file": LocalFileReader(policy, spool)},
        unpacker=ArchiveUnpacker(spool, config.max_unpacked_size, config.max_archive_entries),
        git=GitFetcher(spool, policy, config.max_unpacked_size, config.max_archive_entries, git=config.git),
        default_timeout=config.default_timeout,
        max_timeout=config.max_timeout,
        clock=clock,
    )
    return AssetParts(fetcher, AssetPusher(index, clock, enabled=config.allow_push), session)
