"""DiskCommitter: how values get into place in a DiskStore, one streamed or many at once.

Both ways follow one protocol, so that files and index never disagree:

- The key's lock (KeyLocks) is held from before the file is renamed into place
  until the index records it. Eviction takes a key's lock without waiting (or
  skips the key), so it can never unlink a value that was just put in place.
- Once the thread call has started it runs to the end, and its outcome is applied
  to the index on the loop (``then``, awaited through ``shield``) even if the caller
  was cancelled meanwhile.
- A value whose length changed replaces the old file (whose name holds the old
  length) in the same thread call; an identical value already in place is only
  refreshed, not rewritten.

A batch takes all its keys (sorted, so batches never deadlock), writes its files in
one thread hop per part (file system calls release the GIL), and fails item by
item: one bad file does not fail the others.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping

from cas.digest import Digest
from cas.disk.index import DiskIndex
from cas.disk.key_locks import KeyLocks
from cas.disk.layout import temp_path, value_path
from cas.disk.upkeep import DiskUpkeep
from cas.errors import Internal, ReapiError, ResourceExhausted
from cas.localfs import files as disk_files
from cas.localfs.files import PendingWrite
from cas.localfs.io_lane import IoLane, then


class DiskCommitter:
    def __init__(
        self,
        root: str,
        name: str,
        index: DiskIndex,
        lane: IoLane,
        locks: KeyLocks,
        upkeep: DiskUpkeep,
        *,
        max_bytes: int,
        fsync: bool,
        clock: Callable[[], float],
    ) -> None:
        self.root = root
        self.name = name
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._index = index
        self._lane = lane
        self._locks = locks
        self._upkeep = upkeep
        self._clock = clock
        self._tmp_ids = itertools.count()

    def temp_path(self, digest: Digest) -> str:
        return temp_path(self.root, digest, next(self._tmp_ids))

    def check_size(self, digest: Digest, length: int) -> None:
        if length > self.max_bytes:
            raise ResourceExhausted(
                f"{digest}: a value of {length} bytes is larger than {self.name}'s {self.max_bytes}-byte capacity"
            )

    def os_error(self, err: OSError, action: str, path: str) -> ReapiError:
        return disk_files.as_store_error(self.name, err, action, path)

    # -- many whole values ---------------------------------------------------------------

    async def put_values(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        """Store whole values; return the failures by digest."""
        failures: dict[Digest, ReapiError] = {}
        accepted: dict[Digest, bytes] = {}
        for digest, data in blobs.items():
            try:
                self.check_size(digest, len(data))
            except ReapiError as err:
                failures[digest] = err
                continue
            accepted[digest] = data
        if not accepted:
            return failures
        keys = await self._locks.acquire_all(accepted)
        try:
            # Planned under the locks, so each key's current length is stable until applied.
            plan = [self._plan(digest, data) for digest, data in accepted.items()]
            writing = await self._lane.started_many(
                disk_files.write_values, [(part, self.fsync) for part in self._lane.parts(plan)]
            )
        except BaseException:
            self._locks.release_all(keys)
            raise

        def apply(done: asyncio.Future[list[list[bool | OSError]]]) -> dict[Digest, ReapiError]:
            try:
                outcomes = [outcome for part in done.result() for outcome in part]
            except BaseException as exc:  # noqa: BLE001 - becomes every item's failure
                err = exc if isinstance(exc, ReapiError) else Internal(f"{self.name}: batch write failed: {exc!r}")
                outcomes = [err] * len(plan)  # type: ignore[list-item]
            finally:
                self._locks.release_all(keys)
            now = self._clock()
            for (digest, data), item, outcome in zip(accepted.items(), plan, outcomes):
                if outcome is True:
                    self._index.insert(digest, len(data), now)
                elif outcome is False:  # identical value already stored
                    entry = self._index.get(digest)
                    if entry is not None:
                        self._upkeep.hit(digest, entry, now)
                elif isinstance(outcome, OSError):
                    failures[digest] = self.os_error(outcome, "store", item.final_path)
                else:
                    failures[digest] = outcome  # type: ignore[assignment]
            self._upkeep.evict_if_needed(self.max_bytes)
            return failures

        return await asyncio.shield(then(writing, apply))

    def _plan(self, digest: Digest, data: bytes) -> PendingWrite:
        old = self._index.get(digest)
        length = len(data)
        same_length = old is not None and old.length == length
        return PendingWrite(
            tmp_path=self.temp_path(digest),
            final_path=value_path(self.root, digest, length),
            old_path=None if old is None or same_length else value_path(self.root, digest, old.length),
            data=data,
            compare=same_length,
        )

    # -- one streamed value ----------------------------------------------------------------

    async def commit_stream(self, digest: Digest, fd: int, tmp_path: str, rest: list[bytes], length: int) -> None:
        """Write the rest, close and rename into place, and index it. Owns ``fd`` and
        the temp file from here: they are gone when this returns or raises."""
        try:
            await self._locks.acquire(digest)
        except BaseException:
            await asyncio.shield(self._discard(fd, tmp_path))
            raise
        try:
            old = self._index.get(digest)
            old_path = value_path(self.root, digest, old.length) if old is not None and old.length != length else None
            final_path = value_path(self.root, digest, length)
            finishing = await self._lane.started(
                disk_files.finish_stream, fd, rest, tmp_path, final_path, old_path, self.fsync
            )
        except BaseException:
            self._locks.release(digest)
            await asyncio.shield(self._discard(fd, tmp_path))
            raise

        def apply(done: asyncio.Future[None]) -> None:
            try:
                if done.exception() is None:
                    self._index.insert(digest, length, self._clock())
            finally:
                self._locks.release(digest)
            err = done.exception()
            if isinstance(err, OSError):
                raise self.os_error(err, "store", final_path)
            if err is not None:
                raise err
            self._upkeep.evict_if_needed(self.max_bytes)

        await asyncio.shield(then(finishing, apply))

    async def _discard(self, fd: int, tmp_path: str) -> None:
        await self._lane.start(disk_files.discard, fd, tmp_path)
