"""Lru: keys in least-recently-used order, with a running total of their weights.

One helper for every bounded cache in the project (stores' indexes, the server's
checked inputs, the worker's file and directory caches), so each says only what it
caps (bytes or entries) and what it does with what goes, not how an LRU works.

- ``get`` refreshes (the key becomes the newest); ``peek`` does not.
- ``put`` inserts or replaces, as the newest; the total follows.
- ``evict(max_total)`` removes the oldest entries until the total is at most
  ``max_total`` and returns them, so the caller can release what they stood for
  (files, locks). ``may_evict`` skips keys that are pinned or busy.
- A weight comes from the value (``weigh``); without ``weigh`` every entry weighs 1,
  so the total is the number of entries.
- Values are never None: None is how ``get``, ``peek`` and ``pop`` say "absent".

Not thread-safe: every user touches it from one event loop, in methods that never
await, so it needs no locks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


class Lru(Generic[K, V]):
    """An LRU map with weights. ``entries`` are taken oldest first; an OrderedDict is
    adopted as it is (not copied: a disk index may hold millions of entries)."""

    __slots__ = ("_items", "_weigh", "total")

    def __init__(self, weigh: Callable[[V], int] = _one, entries: Iterable[tuple[K, V]] | OrderedDict[K, V] = ()) -> None:
        self._items: OrderedDict[K, V] = entries if isinstance(entries, OrderedDict) else OrderedDict(entries)
        self._weigh = weigh
        self.total = sum(map(weigh, self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        """Keys, oldest first."""
        return iter(self._items)

    def items(self) -> Iterator[tuple[K, V]]:
        """Entries, oldest first."""
        return iter(self._items.items())

    def newest(self, count: int) -> Iterator[K]:
        """Up to ``count`` keys, most recently used first."""
        return islice(reversed(self._items), count)

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None if absent."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value without refreshing it; None if absent."""
        return self._items.get(key)

    def accessors(self) -> tuple[Callable[[K], V | None], Callable[[K], None]]:
        """``(peek, refresh)`` as the underlying dict's own methods, for loops over
        thousands of keys (FindMissingBlobs sends 10,000) where one Python-level call
        per key would dominate the cost. ``refresh`` needs a present key. Neither
        changes a weight, so the total stays right."""
        return self._items.get, self._items.move_to_end

    def put(self, key: K, value: V) -> None:
        """Insert or replace ``key`` as the most recently used. Evicts nothing: the
        caller decides when (``evict``), for example after a whole batch."""
        items = self._items
        old = items.pop(key, None)
        if old is not None:
            self.total -= self._weigh(old)
        items[key] = value
        self.total += self._weigh(value)

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None if it was absent."""
        value = self._items.pop(key, None)
        if value is not None:
            self.total -= self._weigh(value)
        return value

    def clear(self) -> None:
        """Drop every entry."""
        self._items.clear()
        self.total = 0

    def evict(self, max_total: int, may_evict: Callable[[K], bool] | None = None) -> list[tuple[K, V]]:
        """Remove the least recently used entries until the total is at most
        ``max_total``; return them, oldest first.

        ``may_evict`` is asked about each candidate in turn, oldest first, only while
        the total is still over; a key it refuses stays (pinned, being written). A
        True answer means the key goes, so it may take a lock on the key for the
        caller to release once what the entry stood for is gone.
        """
        if self.total <= max_total:
            return []
        items = self._items
        weigh = self._weigh
        victims: list[tuple[K, V]] = []
        if may_evict is None:
            while self.total > max_total and items:
                key, value = items.popitem(last=False)
                self.total -= weigh(value)
                victims.append((key, value))
            return victims
        excess = self.total - max_total
        for key, value in items.items():
            if excess <= 0:
                break
            if may_evict(key):
                victims.append((key, value))
                excess -= weigh(value)
        for key, value in victims:
            del items[key]
            self.total -= weigh(value)
        return victims
