"""Resumable ByteStream uploads: the Write protocol over partial uploads that outlive a call.

A client whose Write call breaks asks QueryWriteStatus how much arrived and resumes
from there. Each partial upload is a live store write (server/partial_upload.py);
``UploadRegistry`` keeps them by (instance, upload id, digest) and ``write`` takes
one Write call's messages into the right one: a blob already stored finishes at
once with its full size (as REv2 allows, so concurrent writers of one blob cost
little); a whole blob in one message is stored in one store call, with no upload
at all; anything else starts an upload, or resumes one at the offset it reached,
and checks every message's offset and the digest's size as the bytes arrive.

A compressed Write (``.../compressed-blobs/zstd/...``) feeds the same uploads with
what its data decompresses to, so QueryWriteStatus and resumption count uncompressed
bytes, as REv2 defines them: a call starts at the uncompressed offset committed so
far, its later messages' offsets add the compressed bytes sent, and it answers with
that compressed end (or -1 when the blob was already there). A stream that does not
decompress, or decompresses to more or less than the digest says, is INVALID_ARGUMENT
and drops the upload, so nothing of it is stored.

An upload idle for ``idle_timeout`` seconds, beyond ``max_idle`` idle uploads, or
beyond ``max_idle_bytes`` of memory held by idle uploads (oldest first), is aborted:
the pipe raises into the store write, which (by the BlobStore all-or-nothing rule)
leaves no trace. What an idle upload holds is estimated as what it received, up to
``HELD_CAP`` (its queued chunks plus a store's write buffer: a packed store keeps a
whole small value, a disk store 1 MiB before its temp file). When memory is tight
(``memory_tight``, by default less than 10% of the machine's memory available) idle
uploads expire after ``TIGHT_IDLE_TIMEOUT`` and the byte budget halves. A second
after 16 MiB of uploads went, the allocator's free pages are given back to the system. Expiry is
checked whenever uploads start (at most once a second; at once past the byte
budget) and by a background sweep every ``idle_timeout / 4`` (at most a minute, 5 s
when memory is tight), against an injected clock so tests are exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple, Protocol

from cas.compression.codecs import Codec
from cas.errors import Aborted, DeadlineExceeded, InvalidArgument, ReapiError
from cas.released import give_back_memory
from cas.store import BlobStore
from server.partial_upload import Upload, UploadKey
from server.write_payloads import BadPayload, WritePayload, payload_for

__all__ = ["Upload", "UploadKey", "UploadRegistry", "WriteMessage", "WriteStatus"]

log = logging.getLogger("reapi.server.uploads")

DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_IDLE = 1000
DEFAULT_MAX_IDLE_BYTES = 128 << 20
# The most one idle upload is assumed to hold in memory (see the module doc).
HELD_CAP = 2 << 20
TIGHT_IDLE_TIMEOUT = 30.0
# After dropping this much, the allocator's free pages go back to the system, a second later
# (when the aborted writes have let go of their buffers; one trim for a burst of drops).
TRIM_AFTER = 16 << 20
# Chunks queued between the Write call and the store write: enough to overlap
# reading the next message with storing the last, small enough to bound memory.
DEFAULT_MAX_BUFFERED = 4


_tight = (float("-inf"), False)


def memory_is_tight(share: float = 0.10) -> bool:
    """Whether less than ``share`` of this machine's memory is available (read at most
    once a second from /proc/meminfo; never tight where that cannot be read)."""
    global _tight
    now = time.monotonic()
    if now - _tight[0] < 1.0:
        return _tight[1]
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:2]}
        tight = fields["MemAvailable"] < fields["MemTotal"] * share
    except (OSError, KeyError, ValueError, IndexError):
        tight = False
    _tight = (now, tight)
    return tight


class WriteMessage(Protocol):
    """What the Write protocol reads of one message: a ByteStream WriteRequest fits as it
    is, and so does a hand-decoded one (server/write_requests.py), whose data is a view."""

    @property
    def resource_name(self) -> str: ...

    @property
    def write_offset(self) -> int: ...

    @property
    def finish_write(self) -> bool: ...

    @property
    def data(self) -> bytes | memoryview: ...


class WriteStatus(NamedTuple):
    """QueryWriteStatus's answer: bytes committed so far, and whether the blob is stored."""

    committed_size: int
    complete: bool


class UploadRegistry:
    """The uploads in progress, by (instance, upload id, digest), and the Write protocol over them."""

    def __init__(
        self,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        clock: Callable[[], float] = time.monotonic,
        max_idle_bytes: int = DEFAULT_MAX_IDLE_BYTES,
        memory_tight: Callable[[], bool] = memory_is_tight,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_buffered = max_buffered
        self.clock = clock
        self.max_idle_bytes = max_idle_bytes
        self.memory_tight = memory_tight
        self._uploads: dict[UploadKey, Upload] = {}
        self._idle_held: dict[UploadKey, int] = {}  # what each idle upload holds (estimated)
        self.idle_bytes = 0
        self._dropped_since_trim = 0
        self._trim: asyncio.TimerHandle | None = None
        self._last_sweep = float("-inf")
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._uploads)

    # -- the Write protocol ----------------------------------------------------------

    async def write(
        self,
        store: BlobStore,
        key: UploadKey,
        first: WriteMessage,
        rest: AsyncIterator[WriteMessage],
        codec: Codec | None = None,
    ) -> int:
        """Take one Write call's messages (``first``, then ``rest``) into upload ``key`` of
        a blob for ``store``, compressed with ``codec`` if given; the committed size once
        the blob is stored."""
        digest = key.digest
        if await store.has(digest):
            # Already stored (perhaps by a concurrent writer): done, with the full size
            # (-1 for a compressed upload, whose compressed size the server cannot know).
            log.debug("upload %s of %s: already stored", key.upload_id, digest)
            self.discard(key)
            return -1 if codec else digest.size_bytes
        if first.finish_write and first.write_offset == 0:
            data = await payload_for(digest, 0, codec).whole(first.data)
            if data is not None:
                # The whole blob in one message (small blobs: most uploads): stored in one
                # store call, without an Upload's task and pipe. It replaces any earlier
                # partial upload under this name, as a restart at offset 0 would.
                if self.get(key) is not None:
                    self.discard(key, Aborted(f"upload {key.upload_id} of {digest} was restarted from offset 0"))
                await store.put_bytes(digest, data)
                log.debug("stored %s from upload %s (one message)", digest, key.upload_id)
                return len(first.data) if codec else digest.size_bytes
        # From here to attach() nothing awaits, so the offset check cannot go stale.
        upload = self._upload_to_feed(store, key, first.write_offset)
        payload = payload_for(digest, first.write_offset, codec)
        owner = object()
        self._busy(key)
        upload.attach(owner, self.clock())
        try:
            await self._feed(upload, owner, first, rest, payload)
        except BadPayload as err:  # a compressed stream that does not decode: keep nothing of it
            self.discard(key, Aborted(f"upload {key.upload_id} of {digest} was dropped: {err.message}"))
            raise
        finally:
            upload.detach(owner, self.clock())
            if not upload.alive:  # its store write failed (a full disk): nothing to resume
                self.forget(upload)
            elif not upload.attached and self._uploads.get(key) is upload:
                self._idle(upload)
        log.debug("stored %s from upload %s", digest, key.upload_id)
        return payload.committed_size

    async def status(self, store: BlobStore, key: UploadKey) -> WriteStatus:
        """What QueryWriteStatus reports for upload ``key`` of a blob for ``store``."""
        digest = key.digest
        if await store.has(digest):
            return WriteStatus(digest.size_bytes, complete=True)
        upload = self.get(key)
        # An unknown upload has nothing committed: the client starts again at 0.
        return WriteStatus(upload.received if upload else 0, complete=False)

    def _upload_to_feed(self, store: BlobStore, key: UploadKey, offset: int) -> Upload:
        """The upload a Write call starting at ``offset`` feeds: the one it resumes, or a
        fresh one (offset 0 always starts again, dropping what an earlier call sent)."""
        upload = self.get(key)
        committed = upload.received if upload is not None else 0
        if offset != committed and offset != 0:
            raise InvalidArgument(
                f"write_offset {offset} does not match the {committed} bytes committed so far "
                f"for upload {key.upload_id} of {key.digest} (ask QueryWriteStatus, or start again at 0)"
            )
        if upload is None or offset == 0 and committed:
            upload = self.start(key, store)
        return upload

    async def _feed(
        self,
        upload: Upload,
        owner: object,
        first: WriteMessage,
        rest: AsyncIterator[WriteMessage],
        payload: WritePayload,
    ) -> None:
        """Feed ``upload`` one Write call's messages, checking each, until finish_write commits it."""
        digest = upload.digest
        request = first
        while True:
            if request.resource_name and request.resource_name != first.resource_name:
                raise InvalidArgument(
                    f"resource_name changed within one Write stream: {request.resource_name!r} "
                    f"after {first.resource_name!r}"
                )
            if request.write_offset != payload.next_offset:
                raise InvalidArgument(
                    f"write_offset {request.write_offset} does not follow the {payload.describe_received()} "
                    f"so far for {digest}"
                )
            data = request.data
            if data:
                for piece in await payload.take(data, upload.received):
                    await upload.feed(owner, piece)
            if request.finish_write:
                payload.finish()
                if upload.received != digest.size_bytes:
                    raise InvalidArgument(
                        f"finish_write after {upload.received} bytes, but digest {digest} says "
                        f"{digest.size_bytes} bytes"
                    )
                try:
                    await upload.finish(owner)
                finally:
                    if not upload.alive:
                        self.forget(upload)
                return
            following = await anext(rest, None)
            if following is None:
                raise InvalidArgument(
                    f"the Write stream for {digest} ended after {upload.received} bytes without finish_write "
                    "(the upload is kept: ask QueryWriteStatus and resume)"
                )
            request = following

    # -- uploads in progress -----------------------------------------------------------

    def _idle(self, upload: Upload) -> None:
        """``upload`` waits for a Write call to resume it: count what it holds, and keep
        the total within budget."""
        held = min(upload.received, HELD_CAP)
        self.idle_bytes += held - self._idle_held.get(upload.key, 0)
        self._idle_held[upload.key] = held
        if self.idle_bytes > self._byte_budget():
            self.expire_idle(force=True)

    def _busy(self, key: UploadKey) -> None:
        """Upload ``key`` is fed, finished or gone: no longer idle."""
        self.idle_bytes -= self._idle_held.pop(key, 0)

    def _byte_budget(self) -> int:
        return self.max_idle_bytes // 2 if self.memory_tight() else self.max_idle_bytes

    def get(self, key: UploadKey) -> Upload | None:
        upload = self._uploads.get(key)
        if upload is not None and not upload.alive:
            del self._uploads[key]
            self._busy(key)
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
            await asyncio.sleep(min(interval, 5.0) if self.memory_tight() else interval)
            self.expire_idle(force=True)

    def discard(self, key: UploadKey, reason: ReapiError | None = None) -> None:
        """Forget ``key``; abort its store write if it is still open (a finished one is kept)."""
        upload = self._uploads.pop(key, None)
        self._busy(key)
        if upload is not None:
            upload.abort(reason or Aborted(f"upload {key.upload_id} of {key.digest} is no longer needed"))

    def forget(self, upload: Upload) -> None:
        """Drop a finished (or failed) upload, unless its key already names a newer one."""
        if self._uploads.get(upload.key) is upload:
            del self._uploads[upload.key]
            self._busy(upload.key)

    def expire_idle(self, force: bool = False) -> int:
        """Abort idle uploads past the timeout, the count cap or the byte budget (oldest
        first); return how many."""
        now = self.clock()
        if not force and now - self._last_sweep < 1.0:
            return 0
        self._last_sweep = now
        tight = self.memory_tight()
        timeout = min(self.idle_timeout, TIGHT_IDLE_TIMEOUT) if tight else self.idle_timeout
        idle = sorted((u for u in self._uploads.values() if not u.attached), key=lambda u: u.last_active)
        expired = [u for u in idle if now - u.last_active >= timeout or not u.alive]
        gone = {id(u) for u in expired}
        kept = [u for u in idle if id(u) not in gone]
        held = sum(self._idle_held.get(u.key, 0) for u in kept)
        budget = self.max_idle_bytes // 2 if tight else self.max_idle_bytes
        while kept and (len(kept) > self.max_idle or held > budget):
            oldest = kept.pop(0)
            held -= self._idle_held.get(oldest.key, 0)
            expired.append(oldest)
        self._dropped_since_trim += sum(self._idle_held.get(u.key, 0) for u in expired)
        for upload in expired:
            self.discard(
                upload.key,
                DeadlineExceeded(
                    f"upload {upload.key.upload_id} of {upload.digest} expired after "
                    f"{now - upload.last_active:.0f}s idle at {upload.received} bytes"
                    + (" (memory is tight)" if tight else "")
                ),
            )
        if self._dropped_since_trim >= TRIM_AFTER and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(1.0, self._give_back)
        return len(expired)

    def _give_back(self) -> None:
        self._trim = None
        self._dropped_since_trim = 0
        give_back_memory()

    async def aclose(self) -> None:
        """Abort every upload and wait for the store writes to clean up."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
            self._sweeper = None
        uploads = list(self._uploads.values())
        self._uploads.clear()
        self._idle_held.clear()
        self.idle_bytes = 0
        for upload in uploads:
            upload.abort(Aborted(f"the server is shutting down; upload {upload.key.upload_id} was dropped"))
        for upload in uploads:
            await upload.wait_closed()
