"""Resumable ByteStream uploads: partial uploads that outlive the Write call.

A client whose Write call breaks asks QueryWriteStatus how much arrived and resumes
from there. Rather than spooling partial uploads somewhere of our own, each upload
IS an open ``store.write`` running in its own task, fed chunk by chunk through a
small bounded pipe. When a Write call ends early, the store write simply waits for
more; the next Write call with the same upload id attaches and goes on feeding it.
So a partial upload lives where the finished blob will (a disk store's temp file,
a Redis store's bounded buffer), costs no extra copy, and memory per upload stays
at ``max_buffered`` chunks plus whatever the store itself buffers.

An upload idle for ``idle_timeout`` seconds, or beyond ``max_idle`` idle uploads,
is aborted: the pipe raises into the store write, which (by the BlobStore
all-or-nothing rule) leaves no trace. Expiry is checked whenever uploads start (at
most once a second) and by a background sweep every ``idle_timeout / 4`` (at most
a minute), against an injected clock so tests are exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

from cas.digest import Digest
from cas.errors import Aborted, DeadlineExceeded, ReapiError
from cas.store import BlobStore

log = logging.getLogger("reapi.server.uploads")

DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_IDLE = 1000
# Chunks queued between the Write call and the store write: enough to overlap
# reading the next message with storing the last, small enough to bound memory.
DEFAULT_MAX_BUFFERED = 4


class UploadKey(NamedTuple):
    instance_name: str
    upload_id: str
    digest: Digest


class Upload:
    """One upload in progress: a store write fed by whichever Write call is attached."""

    def __init__(self, key: UploadKey, store: BlobStore, max_buffered: int, now: float) -> None:
        self.key = key
        self.received = 0  # bytes handed to the store write; what QueryWriteStatus reports
        self.last_active = now
        self._max_buffered = max_buffered
        self._queue: deque[bytes] = deque()
        self._finished = False
        self._error: ReapiError | None = None
        self._data_ready: asyncio.Future[None] | None = None
        self._space_ready: asyncio.Future[None] | None = None
        self._owner: object | None = None
        self._task = asyncio.ensure_future(store.write(key.digest, self._chunks()))
        self._task.add_done_callback(self._on_write_done)

    @property
    def digest(self) -> Digest:
        return self.key.digest

    @property
    def alive(self) -> bool:
        return not self._task.done() and self._error is None

    @property
    def attached(self) -> bool:
        return self._owner is not None

    def attach(self, owner: object, now: float) -> None:
        """Make ``owner`` (one Write call) the only feeder; an earlier one loses its turn."""
        self._owner = owner
        self.last_active = now
        self._wake_producer()  # an earlier feeder blocked on a full pipe wakes and sees it lost its turn

    def detach(self, owner: object, now: float) -> None:
        if self._owner is owner:
            self._owner = None
            self.last_active = now

    async def feed(self, owner: object, chunk: bytes) -> None:
        """Queue ``chunk`` for the store write; waits while the pipe is full."""
        self._check_usable(owner)
        self._queue.append(chunk)
        self.received += len(chunk)
        self._wake_consumer()
        while len(self._queue) >= self._max_buffered and not self._task.done():
            self._space_ready = asyncio.get_running_loop().create_future()
            await self._space_ready
        self._raise_if_write_failed()

    async def finish(self, owner: object) -> None:
        """End the stream and wait for the store to commit; raises the store's error."""
        self._check_usable(owner)
        self._finished = True
        self._wake_consumer()
        # Shielded: if this Write call is cancelled now, the commit still completes.
        await asyncio.shield(self._task)

    def abort(self, error: ReapiError) -> None:
        """Make the store write fail with ``error`` (it then leaves no trace)."""
        if self._error is None and not self._task.done():
            self._error = error
            self._wake_consumer()

    async def wait_closed(self) -> None:
        """Wait until the store write has ended, whichever way."""
        await asyncio.wait([self._task])

    # -- internals -------------------------------------------------------------

    def _check_usable(self, owner: object) -> None:
        if self._owner is not owner:
            raise Aborted(f"upload {self.key.upload_id} of {self.digest} was taken over by another Write call")
        self._raise_if_write_failed()
        if self._error is not None:
            raise self._error

    def _raise_if_write_failed(self) -> None:
        if self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc
            if not self._finished:
                raise Aborted(f"upload {self.key.upload_id} of {self.digest} ended before finish_write")

    async def _chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue or self._error is not None:
                if self._error is not None:
                    raise self._error  # aborted: stop at once, queued chunks or not
                if self._finished:
                    return
                self._data_ready = loop.create_future()
                await self._data_ready
            chunk = self._queue.popleft()
            self._wake_producer()
            yield chunk

    def _wake_consumer(self) -> None:
        if self._data_ready is not None and not self._data_ready.done():
            self._data_ready.set_result(None)

    def _wake_producer(self) -> None:
        if self._space_ready is not None and not self._space_ready.done():
            self._space_ready.set_result(None)

    def _on_write_done(self, task: asyncio.Future[None]) -> None:
        self._wake_producer()
        if not task.cancelled() and task.exception() is not None and self._error is None:
            log.debug("upload %s of %s failed: %s", self.key.upload_id, self.digest, task.exception())


class UploadRegistry:
    """The uploads in progress, by (instance, upload id, digest)."""

    def __init__(
        self,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_buffered = max_buffered
        self.clock = clock
        self._uploads: dict[UploadKey, Upload] = {}
        self._last_sweep = float("-inf")
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._uploads)

    def get(self, key: UploadKey) -> Upload | None:
        upload = self._uploads.get(key)
        if upload is not None and not upload.alive:
            del self._uploads[key]
            return None
        return upload

    def start(self, key: UploadKey, store: BlobStore) -> Upload:
        """A fresh upload under ``key``, replacing (aborting) any earlier one."""
        self.discard(key, Aborted(f"upload {key.upload_id} of {key.digest} was restarted from offset 0"))
        self.expire_idle()
        upload = Upload(key, store, self.max_buffered, self.clock())
        self._uploads[key] = upload
        if self._sweeper is None:  # started here: only now is there a running loop
            self._sweeper = asyncio.ensure_future(self._sweep_forever())
        return upload

    async def _sweep_forever(self) -> None:
        """Expire idle uploads even when no new upload comes along to trigger it."""
        interval = max(0.05, min(60.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire_idle(force=True)

    def discard(self, key: UploadKey, reason: ReapiError | None = None) -> None:
        """Forget ``key``; abort its store write if it is still open (a finished one is kept)."""
        upload = self._uploads.pop(key, None)
        if upload is not None:
            upload.abort(reason or Aborted(f"upload {key.upload_id} of {key.digest} is no longer needed"))

    def forget(self, upload: Upload) -> None:
        """Drop a finished (or failed) upload, unless its key already names a newer one."""
        if self._uploads.get(upload.key) is upload:
            del self._uploads[upload.key]

    def expire_idle(self, force: bool = False) -> int:
        """Abort idle uploads past the timeout or the count cap; return how many."""
        now = self.clock()
        if not force and now - self._last_sweep < 1.0:
            return 0
        self._last_sweep = now
        idle = sorted((u for u in self._uploads.values() if not u.attached), key=lambda u: u.last_active)
        expired = [u for u in idle if now - u.last_active >= self.idle_timeout or not u.alive]
        excess = len(idle) - len(expired) - self.max_idle
        if excess > 0:
            expired += [u for u in idle if u not in expired][:excess]
        for upload in expired:
            self.discard(
                upload.key,
                DeadlineExceeded(
                    f"upload {upload.key.upload_id} of {upload.digest} expired after "
                    f"{now - upload.last_active:.0f}s idle at {upload.received} bytes"
                ),
            )
        return len(expired)

    async def aclose(self) -> None:
        """Abort every upload and wait for the store writes to clean up."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
            self._sweeper = None
        uploads = list(self._uploads.values())
        self._uploads.clear()
        for upload in uploads:
            upload.abort(Aborted(f"the server is shutting down; upload {upload.key.upload_id} was dropped"))
        for upload in uploads:
            await upload.wait_closed()
