"""ReadCachingStore: a fast store in front of a slow one that stays the source of truth.

- Reads try ``fast``; on a miss they stream from ``slow`` and copy into ``fast`` on
  the way. The copy commits only if the whole value went by: a caller that stops
  early, or a slow read that fails, leaves nothing half-written in ``fast``.
- Ranged reads (an offset or a limit, as in a resumed download) that miss go
  straight to ``slow`` without filling: they should not pay for bytes they did not
  ask for, and the next whole read fills.
- Writes go to ``slow``; with ``write_to_fast`` also to ``fast``, which commits only
  after ``slow`` has.
- ``find_missing`` (so ``has`` too) asks only ``slow``: ``fast`` may evict at any time, and
  a blob it holds that ``slow`` lost must still be reported missing so clients
  upload it again.

Meant for the CAS, where the value under a key never changes. In an action cache a
value rewritten in ``slow`` (by another replica, or with ``write_to_fast`` off)
leaves a stale copy in ``fast`` until it is evicted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping

from cas.decorators.cache_fill import CacheFill
from cas.digest import Digest
from cas.errors import NotFound, ReapiError
from cas.store import BlobStore, closing

log = logging.getLogger("reapi.cas.read_cache")


class ReadCachingStore(BlobStore):
    """Reads through ``fast``, filling it from ``slow``; ``slow`` decides existence."""

    def __init__(self, fast: BlobStore, slow: BlobStore, name: str = "read_cache", write_to_fast: bool = False) -> None:
        self.fast = fast
        self.slow = slow
        self.name = name
        self.write_to_fast = write_to_fast

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return await self.slow.find_missing(digests)

    # -- reads ---------------------------------------------------------------------

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        async with closing(self.fast.read(digest, offset, limit)) as cached:
            try:
                first = await anext(cached)
            except NotFound:
                pass  # a miss: fall through to slow
            except StopAsyncIteration:
                return
            else:
                yield first
                async for chunk in cached:
                    yield chunk
                return
        if offset or limit:
            async with closing(self.slow.read(digest, offset, limit)) as ranged:
                async for chunk in ranged:
                    yield chunk
            return
        async with closing(self.slow.read(digest)) as whole, closing(self._fill_while_streaming(digest, whole)) as filled:
            async for chunk in filled:
                yield chunk

    async def _fill_while_streaming(self, digest: Digest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            first = await anext(chunks)  # NotFound from slow propagates before any fill starts
        except StopAsyncIteration:
            await self._fill_many({digest: b""})
            return
        fill = CacheFill(self.fast, digest)
        complete = False
        try:
            await fill.feed(first)
            yield first
            async for chunk in chunks:
                await fill.feed(chunk)
                yield chunk
            complete = True
        finally:
            if complete:
                await fill.finish()
            else:
                await fill.abort()

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """The batch twin of ``read``: hits from ``fast``, misses from ``slow`` in one
        batch, filled into ``fast`` in one batch."""
        digests = list(digests)
        found = await self.fast.get_many(digests)
        misses = [d for d in digests if d not in found]
        if misses:
            from_slow = await self.slow.get_many(misses)
            if from_slow:
                await self._fill_many(from_slow)
            found.update(from_slow)
        return found

    async def _fill_many(self, values: Mapping[Digest, bytes]) -> None:
        """Best effort (``slow`` has the values): failures are logged, never raised."""
        try:
            failures = await self.fast.put_many(values)
        except ReapiError as err:
            failures = dict.fromkeys(values, err)
        for digest, failure in failures.items():
            log.warning("not caching %s in %s: %s", digest, self.fast.name, failure)

    # -- writes --------------------------------------------------------------------

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        if not self.write_to_fast:
            await self.slow.write(digest, chunks)
            return
        fill = CacheFill(self.fast, digest)
        exhausted = False

        async def teed() -> AsyncIterator[bytes]:
            nonlocal exhausted
            async for chunk in chunks:
                await fill.feed(chunk)
                yield chunk
            exhausted = True

        try:
            await self.slow.write(digest, teed())
        except BaseException:
            await fill.abort()
            raise
        # slow may return without reading everything (it already held the value);
        # fast then saw only a prefix and must not commit it.
        if exhausted:
            await fill.finish()
        else:
            await fill.abort()

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures = await self.slow.put_many(blobs)
        if self.write_to_fast:
            stored = {d: v for d, v in blobs.items() if d not in failures}
            if stored:
                await self._fill_many(stored)
        return failures

    async def aclose(self) -> None:
        """Children may be shared; whoever built them closes them (cas.config.close_stores)."""
