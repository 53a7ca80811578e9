"""Store blobs in the async CAS from blocking code running in a worker thread.

Unpacking an archive (tarfile, zipfile) and reading git objects are blocking
loops, so they run in a thread; this class is their door to the CAS. Small files
are batched (one find_missing + put_many per few MiB), large ones are spooled
while hashed and then streamed in. It also enforces the UnpackBudget (unpacked
size and number of entries: archive bombs), refusing a member whose declared size
would pass it before reading any of it, and stops the thread promptly once the
request is abandoned (``cancel()``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cas.digest import ALGORITHMS, Digest, DigestFunctionValue
from cas.errors import Cancelled, ResourceExhausted
from cas.store import BlobStore
from server.assets.limits import UnpackBudget
from server.assets.spool import Spool, SpoolFile

BATCH_BYTES = 4 << 20
READ_CHUNK = 1 << 20


class ThreadUploader:
    """Blocking ``put``/``put_stream`` for a worker thread; the CAS calls run on ``loop``."""

    def __init__(
        self,
        cas: BlobStore,
        loop: asyncio.AbstractEventLoop,
        spool: Spool,
        function: DigestFunctionValue,
        budget: UnpackBudget,
        what: str = "content",
    ) -> None:
        self.cas = cas
        self.loop = loop
        self.spool = spool
        self.function = function
        self.budget = budget
        self.what = what
        self.total_bytes = 0
        self.entries = 0
        self._batch: dict[Digest, bytes] = {}
        self._batch_bytes = 0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def _check(self, more_bytes: int) -> None:
        if self._cancelled.is_set():
            raise Cancelled(f"{self.what}: abandoned (timeout or cancelled request)")
        self.ensure_room(more_bytes)
        self.total_bytes += more_bytes

    def ensure_room(self, size: int) -> None:
        """RESOURCE_EXHAUSTED if ``size`` more bytes would pass the budget (checked before reading them)."""
        if self.total_bytes + size > self.budget.max_bytes:
            raise ResourceExhausted(f"{self.what}: {self.budget.bytes_message()}")

    def count_entry(self) -> None:
        self._check(0)
        self.entries += 1
        if self.entries > self.budget.max_entries:
            raise ResourceExhausted(f"{self.what}: {self.budget.entries_message()}")

    def count_copy(self, size: int) -> None:
        """A file whose content is already stored (a hard link, a git blob used again) still counts."""
        self._check(size)

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if self._cancelled.is_set():
                    future.cancel()
                    raise Cancelled(f"{self.what}: abandoned (timeout or cancelled request)") from None

    def put(self, data: bytes) -> Digest:
        """Store a small value (batched); its digest."""
        self._check(len(data))
        digest = Digest.of(data, self.function)
        if digest not in self._batch:
            self._batch[digest] = data
            self._batch_bytes += len(data)
            if self._batch_bytes >= BATCH_BYTES:
                self.flush()
        return digest

    def put_stream(self, read: Callable[[int], bytes], size: int) -> Digest:
        """Store ``size`` bytes read with ``read(n)``, spooled so memory stays bounded."""
        hasher = ALGORITHMS[self.function].new()
        with self.spool.new() as spooled:
            remaining = size
            while remaining > 0:
                chunk = read(min(READ_CHUNK, remaining))
                if not chunk:
                    break
                self._check(len(chunk))
                hasher.update(chunk)
                spooled.write(chunk)
                remaining -= len(chunk)
            digest = Digest(hasher.hexdigest(), spooled.size, self.function)
            self._run(self._store_spooled(digest, spooled))
        return digest

    def flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, {}, 0
            self._run(self._store_batch(batch))

    async def _store_batch(self, batch: dict[Digest, bytes]) -> None:
        missing = await self.cas.find_missing(list(batch))
        if missing:
            failures = await self.cas.put_many({d: batch[d] for d in missing})
            if failures:
                digest, err = next(iter(failures.items()))
                raise err.with_context(f"{self.what}: storing {digest}")

    async def _store_spooled(self, digest: Digest, spooled: SpoolFile) -> None:
        if not await self.cas.has(digest):
            await self.cas.write(digest, spooled.chunks())
