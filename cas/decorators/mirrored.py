"""MirroredStore: every value on two stores, served while either one is up.

Usually two ``grpc`` stores pointing at two storage nodes. It is replication for
availability, not a consensus system: each side answers for itself, and what one
side lacks is copied from the other when a call notices.

- **Writes go to both**, fed from the one stream as it arrives. A write succeeds if
  either side stored the value; the side that failed gets it back by repair.
- **Reads go to one side**, chosen by the digest so that reads spread over both;
  a value absent there, or a side that fails, is read from the other. A stream
  that breaks midway resumes on the other side at the same offset.
- **Repair on a miss**: a whole read served by the other side copies the value back
  while it streams; a batch read copies the values it found on the other side; an
  existence check copies whatever one side holds and the other lacks before it
  answers, so "present" means present on both again. Repairs are best effort
  (logged, never failing the call: one copy exists).
- **One side down**: calls are answered by the other alone (a value it lacks is
  missing), and the failing side is logged once until it answers again. Only when
  both sides fail does a call fail, with an error naming both.

A node that comes back empty is refilled by use: the blobs clients ask about are
copied to it as they are asked about. Values need not be their digest's content,
so the store suits the action cache too (a rewritten value is written to both).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Collection, Iterable, Mapping
from typing import TypeVar

from cas.decorators.cache_fill import CacheFill
from cas.decorators.sharding import blame
from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound, OutOfRange, ReapiError
from cas.store import BlobStore, closing, each

log = logging.getLogger("reapi.cas.mirrored")

T = TypeVar("T")

# Repairs of values above this size stream from one side to the other instead of
# passing through memory whole (in a CAS a digest's size is its value's size).
STREAM_REPAIR_ABOVE = 1 << 20
# Large values copied at once during one repair.
REPAIR_CONCURRENCY = 4


async def outcome(call: Awaitable[T]) -> T | ReapiError:
    """The result of ``call``, or the ReapiError it raised (to decide per side)."""
    try:
        return await call
    except ReapiError as err:
        return err


class MirroredStore(BlobStore):
    """Two stores holding the same values; either serves (see the module docstring)."""

    def __init__(self, a: BlobStore, b: BlobStore, name: str = "mirrored") -> None:
        self.a = a
        self.b = b
        self.name = name
        self._failing: set[str] = set()  # sides whose last call failed, logged once

    # -- bookkeeping -----------------------------------------------------------------

    def _sides(self, digest: Digest) -> tuple[BlobStore, BlobStore]:
        """Which side reads ``digest`` first: half the digests each (by the hash's last bit)."""
        return (self.a, self.b) if int(digest.hash[-1], 16) & 1 == 0 else (self.b, self.a)

    def _blame(self, err: ReapiError, side: BlobStore) -> ReapiError:
        return blame(err, side, self.name, role="mirror")

    def _failed(self, side: BlobStore, err: ReapiError) -> ReapiError:
        """Note that ``side`` failed (logged on the first failure in a row); the error, blamed."""
        blamed = self._blame(err, side)
        if side.name not in self._failing and not isinstance(err, (NotFound, OutOfRange)):
            self._failing.add(side.name)
            log.warning("%s: serving from the other mirror: %s", self.name, blamed)
        return blamed

    def _answered(self, side: BlobStore) -> None:
        if side.name in self._failing:
            self._failing.discard(side.name)
            log.info("%s: mirror %r answers again", self.name, side.name)

    def _both_failed(self, first: ReapiError, second: ReapiError) -> ReapiError:
        """Both sides failed: the second error's code, both messages (each names its side).
        Both refusing the request itself (a value that is not its digest's) is just that."""
        if isinstance(first, InvalidArgument) and isinstance(second, InvalidArgument):
            return second
        return second.with_context(f"both mirrors of {self.name!r} failed: {first.message}")

    # -- existence -------------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return set()
        in_a, in_b = await asyncio.gather(outcome(self.a.find_missing(wanted)), outcome(self.b.find_missing(wanted)))
        if isinstance(in_a, ReapiError):
            err_a = self._failed(self.a, in_a)
            if isinstance(in_b, ReapiError):
                raise self._both_failed(err_a, self._failed(self.b, in_b))
            self._answered(self.b)
            return in_b
        self._answered(self.a)
        if isinstance(in_b, ReapiError):
            self._failed(self.b, in_b)
            return in_a
        self._answered(self.b)
        await asyncio.gather(self._copy(self.b, self.a, in_a - in_b), self._copy(self.a, self.b, in_b - in_a))
        return in_a & in_b

    async def _copy(self, source: BlobStore, target: BlobStore, digests: Collection[Digest]) -> None:
        """Repair: copy ``digests`` from ``source`` to ``target``; failures are logged."""
        if not digests:
            return
        small = [d for d in digests if d.size_bytes <= STREAM_REPAIR_ABOVE]
        large = [d for d in digests if d.size_bytes > STREAM_REPAIR_ABOVE]
        if small:
            values = await outcome(source.get_many(small))
            if isinstance(values, ReapiError):
                log.warning("%s: cannot repair %d values in %s: %s", self.name, len(small), target.name, values)
            else:
                await self._put_quietly(target, values)
        if large:
            await each(large, lambda digest: self._stream_copy(source, target, digest), REPAIR_CONCURRENCY)

    async def _stream_copy(self, source: BlobStore, target: BlobStore, digest: Digest) -> None:
        try:
            async with closing(source.read(digest)) as chunks:
                await target.write(digest, chunks)
        except ReapiError as err:
            log.warning("%s: cannot repair %s in %s: %s", self.name, digest, target.name, err)
        else:
            log.info("%s: repaired %s in %s", self.name, digest, target.name)

    async def _put_quietly(self, target: BlobStore, values: Mapping[Digest, bytes]) -> None:
        if not values:
            return
        failures = await outcome(target.put_many(values))
        if isinstance(failures, ReapiError):
            failures = dict.fromkeys(values, failures)
        for digest, err in failures.items():
            log.warning("%s: cannot repair %s in %s: %s", self.name, digest, target.name, err)
        if len(failures) < len(values):
            log.info("%s: repaired %d values in %s", self.name, len(values) - len(failures), target.name)

    # -- reads -----------------------------------------------------------------------

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        first, second = self._sides(digest)
        sent = 0
        first_error: ReapiError | None = None  # None: the first side said absent
        try:
            async with closing(first.read(digest, offset, limit)) as chunks:
                async for chunk in chunks:
                    sent += len(chunk)
                    yield chunk
            self._answered(first)
            return
        except OutOfRange:
            raise
        except NotFound as err:
            if sent:  # gone mid-read (evicted): finish from the other side
                first_error = self._blame(err, first)
        except ReapiError as err:
            first_error = self._failed(first, err)
        remaining = None if not limit else limit - sent
        if remaining == 0:
            return
        # A whole read the first side said no to repairs it while streaming.
        repair = first_error is None and offset == 0 and not limit
        fill = CacheFill(first, digest) if repair else None
        complete = False
        try:
            async with closing(second.read(digest, offset + sent, remaining)) as chunks:
                async for chunk in chunks:
                    if fill is not None:
                        await fill.feed(chunk)
                    yield chunk
            complete = True
            self._answered(second)
        except NotFound as err:
            if sent or first_error is None:
                raise NotFound(f"{digest} not found in either mirror of {self.name!r}") from None
            raise NotFound(
                f"{digest} not found in mirror {second.name!r} of {self.name!r} (the other failed: {first_error.message})"
            ) from None
        except OutOfRange:
            raise
        except ReapiError as err:
            second_error = self._failed(second, err)
            raise (second_error if first_error is None else self._both_failed(first_error, second_error)) from None
        finally:
            if fill is not None:
                if complete:
                    await fill.finish()
                else:
                    await fill.abort()

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """Half the digests asked of each side at once, what one lacks asked of the other."""
        unique = list(dict.fromkeys(digests))
        prefer_a = [d for d in unique if int(d.hash[-1], 16) & 1 == 0]
        prefer_b = [d for d in unique if int(d.hash[-1], 16) & 1 == 1]
        if not prefer_b:
            return await self._get_part(self.a, self.b, prefer_a)
        if not prefer_a:
            return await self._get_part(self.b, self.a, prefer_b)
        from_a, from_b = await asyncio.gather(
            self._get_part(self.a, self.b, prefer_a), self._get_part(self.b, self.a, prefer_b)
        )
        return from_a | from_b

    async def _get_part(self, first: BlobStore, second: BlobStore, digests: list[Digest]) -> dict[Digest, bytes]:
        got = await outcome(first.get_many(digests))
        first_error: ReapiError | None = None
        if isinstance(got, ReapiError):
            first_error = self._failed(first, got)
            got, rest = {}, digests
        else:
            self._answered(first)
            rest = [d for d in digests if d not in got]
        if not rest:
            return got
        more = await outcome(second.get_many(rest))
        if isinstance(more, ReapiError):
            second_error = self._failed(second, more)
            if first_error is not None:
                raise self._both_failed(first_error, second_error)
            return got  # the first side answered: what it lacks is missing
        self._answered(second)
        if first_error is None:
            await self._put_quietly(first, more)
        return got | more

    # -- writes ----------------------------------------------------------------------

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        fills = (CacheFill(self.a, digest, log_failure=False), CacheFill(self.b, digest, log_failure=False))
        try:
            async for chunk in chunks:
                for fill in fills:
                    await fill.feed(chunk)
                if all(fill.stopped for fill in fills):
                    break  # both refused, or both already held the value
        except BaseException:
            await asyncio.gather(*(fill.abort() for fill in fills))
            raise
        stored_a, stored_b = await asyncio.gather(*(fill.finish() for fill in fills))
        self._after_write(fills[0], stored_a, fills[1], stored_b)

    def _after_write(self, fill_a: CacheFill, stored_a: bool, fill_b: CacheFill, stored_b: bool) -> None:
        if stored_a:
            self._answered(self.a)
        if stored_b:
            self._answered(self.b)
        if stored_a or stored_b:
            for fill, stored in ((fill_a, stored_a), (fill_b, stored_b)):
                if not stored and fill.failure is not None:
                    self._failed(fill.store, fill.failure)
            return
        assert fill_a.failure is not None and fill_b.failure is not None
        raise self._both_failed(self._failed(self.a, fill_a.failure), self._failed(self.b, fill_b.failure))

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        if not blobs:
            return {}
        to_a, to_b = await asyncio.gather(outcome(self.a.put_many(blobs)), outcome(self.b.put_many(blobs)))
        failed_a = dict.fromkeys(blobs, to_a) if isinstance(to_a, ReapiError) else to_a
        failed_b = dict.fromkeys(blobs, to_b) if isinstance(to_b, ReapiError) else to_b
        for side, failed in ((self.a, failed_a), (self.b, failed_b)):
            if len(failed) < len(blobs):
                self._answered(side)
            if failed:
                self._failed(side, next(iter(failed.values())))
        return {
            digest: self._both_failed(self._blame(err, self.a), self._blame(failed_b[digest], self.b))
            for digest, err in failed_a.items() if digest in failed_b
        }

    async def aclose(self) -> None:
        """Children may be shared; whoever built them closes them (cas.config.close_stores)."""
