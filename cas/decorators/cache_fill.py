"""CacheFill: feed a second store's ``write`` from chunks that are flowing elsewhere.

A read-through cache streams a value from the slow store to its caller and copies it
into the fast store on the way, without buffering the whole value. The copy runs
``fast.write`` in a task whose chunk stream is fed through a small queue, and relies
on the BlobStore rule that ``write`` commits only if its stream ends cleanly:
``finish()`` ends the stream (commit), ``abort()`` raises inside it (no trace).

Filling is best effort. The value's source of truth is elsewhere, so a fill that
fails (the fast store is full, or the value is over its size limit) must not fail
the read or write it rides on; it is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cas.digest import Digest
from cas.errors import ReapiError
from cas.store import BlobStore

log = logging.getLogger("reapi.cas.cache_fill")

# Chunks in flight between the producer and the fast store's write; bounds memory.
QUEUE_DEPTH = 4

_END = object()


class _Abandoned(Exception):
    """Raised inside the fill's chunk stream so the fast store does not commit."""


class CacheFill:
    """One background ``store.write(digest, ...)`` fed chunk by chunk."""

    def __init__(self, store: BlobStore, digest: Digest, log_failure: bool = True) -> None:
        self.store = store
        self.digest = digest
        self.log_failure = log_failure
        self.failure: ReapiError | None = None  # why the store refused, once it has
        self._queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_DEPTH)
        self._task = asyncio.create_task(self._run(), name=f"fill {store.name} {digest}")

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Abandoned):
                raise item
            yield item  # type: ignore[misc]

    async def _run(self) -> bool:
        try:
            await self.store.write(self.digest, self._chunks())
            return True
        except _Abandoned:
            return False
        except ReapiError as err:
            self.failure = err
            if self.log_failure:
                log.warning("not caching %s in %s: %s", self.digest, self.store.name, err)
            return False

    @property
    def stopped(self) -> bool:
        """Whether the write has ended (committed, refused, or stopped reading early)."""
        return self._task.done()

    async def feed(self, chunk: bytes) -> None:
        """Pass one chunk on; a no-op once the fill has stopped by itself."""
        if not self._task.done():
            await self._send(chunk)

    async def finish(self) -> bool:
        """End the stream cleanly so the store commits; True if it did."""
        if not self._task.done():
            await self._send(_END)
        return await self._task

    async def abort(self) -> None:
        """Make the store drop what it received; safe to call in any state."""
        if not self._task.done():
            self._send_nowait_or_cancel(_Abandoned(f"fill of {self.digest} abandoned"))
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise

    async def _send(self, item: object) -> None:
        # The write may stop consuming (it failed, or skipped a value it already
        # holds): never wait on a queue that nobody reads.
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait([put, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()

    def _send_nowait_or_cancel(self, item: object) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # The writer is blocked elsewhere; cancelling also leaves no trace.
            self._task.cancel()
