"""KeyLocks: one holder per key at a time, for commits and evictions of a DiskStore.

A commit (rename into place, then index update) and an eviction (index removal,
then unlink) of the same key must not interleave, or an unlink queued by the
eviction could delete a value that a writer had just renamed into place. Writers
wait for the key; eviction never waits (``try_acquire``) and simply skips a key
that is busy, since a key being written is about to be the newest anyway.

Everything runs on one event loop, so a plain dict is enough: there is no await
between checking a key and taking it. Batches take their keys in sorted order,
so two overlapping batches cannot deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable


class KeyLocks:
    def __init__(self) -> None:
        # key -> None while held without waiters, or a future its waiters wait on.
        # Uncontended keys (nearly all) cost one dict entry and no allocation.
        self._held: dict[Hashable, asyncio.Future[None] | None] = {}

    def held(self, key: Hashable) -> bool:
        return key in self._held

    def try_acquire(self, key: Hashable) -> bool:
        if key in self._held:
            return False
        self._held[key] = None
        return True

    async def acquire(self, key: Hashable) -> None:
        held = self._held
        while key in held:
            released = held[key]
            if released is None:
                released = held[key] = asyncio.get_running_loop().create_future()
            # Shielded: a cancelled waiter must not cancel the future the others wait on.
            await asyncio.shield(released)
        held[key] = None

    async def acquire_all(self, keys: Iterable[Hashable]) -> list[Hashable]:
        """Take every key (sorted, so batches never deadlock); return them in that order.
        If cancelled halfway, releases the keys already taken."""
        ordered = sorted(set(keys))  # type: ignore[type-var]
        held = self._held
        taken: list[Hashable] = []
        try:
            for key in ordered:
                if key in held:
                    await self.acquire(key)
                else:
                    held[key] = None
                taken.append(key)
        except BaseException:
            self.release_all(taken)
            raise
        return taken

    def release(self, key: Hashable) -> None:
        released = self._held.pop(key)
        if released is not None:
            released.set_result(None)

    def release_all(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.release(key)

    def __len__(self) -> int:
        return len(self._held)
