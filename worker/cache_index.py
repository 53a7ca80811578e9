"""CacheIndex: the FileCache's index, and which blobs it holds in either mode.

The index is an LRU of cache keys ``(digest, executable)`` weighted by file size. A
cold fetch asks, for every one of a thousand input files, whether its blob is cached
in either mode (a copy in the other mode is a local copy away): two lookups of a
fresh key tuple per file, twice per action (the read ahead, then the fetch), cost
about 1 ms of a 1,000-file fetch on the event loop (docs/BENCHMARKS.md). Counting
the modes cached per digest lets ``uncached`` answer for a whole batch in C-level
set passes, each digest hashed once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from operator import itemgetter
from typing import TypeVar

from cas.digest import Digest
from cas.lru import Lru
from worker.cache_files import CacheKey

K = TypeVar("K", bound=Hashable)
_DIGEST, _MODE = itemgetter(0), itemgetter(1)
_ONE_MODE = {False: (False,), True: (True,)}


def count_in(counts: dict[K, int], keys: Collection[K]) -> None:
    """One more for each of ``keys`` (distinct): in C-level passes when none is counted yet."""
    if counts.keys().isdisjoint(keys):
        counts.update(dict.fromkeys(keys, 1))
        return
    for key in keys:
        counts[key] = counts.get(key, 0) + 1


def count_out(counts: dict[K, int], keys: Collection[K]) -> None:
    """One less for each of ``keys`` (distinct, each counted); those at zero go."""
    taken = list(map(counts.pop, keys))
    if max(taken, default=1) > 1:
        for key, count in zip(keys, taken):
            if count > 1:
                counts[key] = count - 1


class CacheIndex(Lru[CacheKey, int]):
    """An ``Lru`` of cache keys (value: the file's size) that also counts, by digest,
    the modes cached; every change goes through ``put``, ``pop``, ``evict`` or ``clear``."""

    __slots__ = ("_modes",)

    def __init__(self, entries: Iterable[tuple[CacheKey, int]] | OrderedDict[CacheKey, int] = ()) -> None:
        super().__init__(int, entries)
        self._modes: dict[Digest, int] = dict(Counter(map(_DIGEST, self)))

    def absent(self, keys: list[CacheKey], busy: Mapping[Digest, object]) -> dict[Digest, tuple[bool, ...]]:
        """The blobs of ``keys`` cached in neither mode and not in ``busy`` (being
        fetched), with the modes wanted; in key order."""
        digests = list(map(_DIGEST, keys))
        gone = self.uncached(digests)
        if busy and gone:
            gone = gone.difference(busy)  # C-level: each digest's hash is known already
        if len(gone) == len(keys):  # every blob absent, each wanted in one mode: the cold fetch
            return dict(zip(digests, map(_ONE_MODE.__getitem__, map(_MODE, keys))))
        out: dict[Digest, tuple[bool, ...]] = {}
        for d, x in keys:
            if d in gone:
                out[d] = (x,) if d not in out else (False, True)
        return out

    def uncached(self, digests: Iterable[Digest]) -> set[Digest]:
        """Those of ``digests`` cached in neither mode (one hash each)."""
        return set(digests).difference(self._modes)

    def holds_none(self, digests: Iterable[Digest]) -> bool:
        """Whether none of ``digests`` is cached in any mode."""
        return self._modes.keys().isdisjoint(digests)

    def put(self, key: CacheKey, value: int) -> None:
        if key not in self:
            modes = self._modes
            modes[key[0]] = modes.get(key[0], 0) + 1
        super().put(key, value)

    def pop(self, key: CacheKey) -> int | None:
        value = super().pop(key)
        if value is not None:
            self._forget(key)
        return value

    def clear(self) -> None:
        super().clear()
        self._modes.clear()

    def evict(self, max_total: int, may_evict: Callable[[CacheKey], bool] | None = None) -> list[tuple[CacheKey, int]]:
        victims = super().evict(max_total, may_evict)
        for key, _ in victims:
            self._forget(key)
        return victims

    def _forget(self, key: CacheKey) -> None:
        modes = self._modes
        left = modes.pop(key[0]) - 1
        if left:
            modes[key[0]] = left
