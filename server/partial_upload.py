"""One partial upload: an open store write fed chunk by chunk through a small pipe.

Rather than spooling a partial ByteStream upload somewhere of our own, the upload
IS the ``store.write`` of its blob, running in its own task and reading from a
bounded queue that whichever Write call is attached feeds. When that call ends
early the store write simply waits for more, so a partial upload lives where the
finished blob will (a disk store's temp file, a Redis store's bounded buffer),
costs no extra copy, and holds at most ``max_buffered`` chunks in memory plus what
the store buffers. server/uploads.py keeps the uploads in progress and speaks the
Write protocol over them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple, cast

from cas.digest import Digest
from cas.errors import Aborted, ReapiError
from cas.released import drop_tracebacks
from cas.store import BlobStore

log = logging.getLogger("reapi.server.uploads")


class UploadKey(NamedTuple):
    """An upload is the client's upload id for one blob of one instance."""

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
        self._queue: deque[bytes | memoryview] = deque()
        self._finished = False
        self._error: ReapiError | None = None
        self._failure: BaseException | None = None  # how the store write failed
        self._data_ready: asyncio.Future[None] | None = None
        self._space_ready: asyncio.Future[None] | None = None
        self._owner: object | None = None
        self._task = asyncio.ensure_future(self._write(store))
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

    async def feed(self, owner: object, chunk: bytes | memoryview) -> None:
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
        if self._failure is not None:
            raise self._failure

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
            if self._failure is not None:
                raise self._failure
            if not self._finished:
                raise Aborted(f"upload {self.key.upload_id} of {self.digest} ended before finish_write")

    async def _write(self, store: BlobStore) -> None:
        """The store write. Its failure is kept without the frames it went through:
        they hold this upload (and its chunks), which holds this task, and such a cycle
        waits for a full collection (cas/released.py); a full disk fails many writes."""
        try:
            # Views of the received messages, as BlobStore.write allows (cas/store.py).
            await store.write(self.key.digest, cast(AsyncIterator[bytes], self._chunks()))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - kept, and raised to the Write call
            drop_tracebacks(exc)
            self._queue.clear()
            self._failure = exc

    async def _chunks(self) -> AsyncIterator[bytes | memoryview]:
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
        if self._failure is not None and self._error is None:
            log.debug("upload %s of %s failed: %s", self.key.upload_id, self.digest, self._failure)
