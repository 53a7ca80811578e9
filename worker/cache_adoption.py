"""Adoptions: files a placer wrote in place, taken into the FileCache in the background.

Why: a cold action's files written once, in a tree to mount (worker/input_placer.py),
become cache files by a link each; done on the input path, those 1,000 links and
index entries held up the action. They run once the action's inputs are in place
instead, while leases wanting those blobs wait for them rather than fetch them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cas.digest import Digest
from worker.cache_files import CacheKey


class Adoptions:
    """Adoptions in progress; ``drain`` waits for them (tests, shutdown)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, blobs: list[Digest], after: asyncio.Event | None, inflight: dict[Digest, asyncio.Future[None]],
              link: Callable[[], list[CacheKey]], add: Callable[[CacheKey], None]) -> None:
        """Once ``after`` is set, ``link`` (blocking: the files into the cache, the keys
        it took) on a thread and ``add`` each key taken to the index; until then the
        ``inflight`` futures of ``blobs`` stay, so leases wanting them wait, and they
        are resolved whatever happens."""
        waiting = set(filter(None, map(inflight.get, blobs)))  # C-level: a cold fetch adopts a thousand

        async def adopt() -> None:
            try:
                if after is not None:
                    await after.wait()
                for key in await asyncio.to_thread(link):
                    add(key)
            finally:
                for digest in blobs:
                    if inflight.get(digest) in waiting:
                        del inflight[digest]
                for future in waiting:
                    if not future.done():
                        future.set_result(None)

        task = asyncio.get_running_loop().create_task(adopt())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
