"""DiskIndex: hits, batched hits, inserts, conditional forgets and eviction order."""

from __future__ import annotations

from collections import OrderedDict

from cas.digest import Digest
from cas.disk.index import DiskIndex, IndexEntry

TOUCH = 600.0


def digest(n: int) -> Digest:
    return Digest.of(f"value {n}".encode())


def index_of(*lengths: int, stamp: float = 0.0) -> tuple[DiskIndex, list[Digest]]:
    """An index of ``len(lengths)`` entries, oldest first."""
    keys = [digest(n) for n in range(len(lengths))]
    entries = OrderedDict((key, IndexEntry(length, stamp)) for key, length in zip(keys, lengths))
    return DiskIndex(entries, TOUCH), keys


def test_counts_entries_and_bytes() -> None:
    index, keys = index_of(10, 20, 30)
    assert (len(index), index.total_bytes) == (3, 60)
    assert list(index) == keys
    assert index.get(keys[1]) == IndexEntry(20, 0.0)
    assert index.get(digest(99)) is None


def test_hit_makes_newest_and_asks_for_a_touch_only_when_stale() -> None:
    index, keys = index_of(10, 20, 30, stamp=1000.0)
    entry = index.get(keys[0])
    assert entry is not None
    assert index.hit(keys[0], entry, 1000.0 + TOUCH - 1) is False  # recorded recently enough
    assert list(index) == [keys[1], keys[2], keys[0]]
    assert entry.stamp == 1000.0
    assert index.hit(keys[0], entry, 1000.0 + TOUCH) is True
    assert entry.stamp == 1000.0 + TOUCH


def test_hit_many_returns_the_missing_and_the_stale() -> None:
    index, keys = index_of(10, 20, 30)
    fresh = index.get(keys[2])
    assert fresh is not None
    fresh.stamp = 5000.0
    absent = digest(99)
    missing, stale = index.hit_many([keys[0], absent, keys[2]], 5000.0)
    assert missing == {absent}
    assert stale == [(keys[0], IndexEntry(10, 5000.0))]  # its stamp is now recorded as refreshed
    assert list(index) == [keys[1], keys[0], keys[2]]  # both hits moved to the newest end, in order


def test_insert_adds_or_replaces_and_keeps_the_byte_count() -> None:
    index, keys = index_of(10, 20)
    index.insert(digest(5), 7, 100.0)
    assert (len(index), index.total_bytes) == (3, 37)
    index.insert(keys[0], 50, 200.0)  # rewritten under a new length
    assert index.get(keys[0]) == IndexEntry(50, 200.0)
    assert index.total_bytes == 77
    assert list(index) == [keys[1], digest(5), keys[0]]


def test_forget_drops_only_the_entry_it_was_given() -> None:
    index, keys = index_of(10, 20)
    old = index.get(keys[0])
    assert old is not None
    index.insert(keys[0], 15, 1.0)  # a writer replaced it meanwhile
    index.forget(keys[0], old)
    assert index.get(keys[0]) == IndexEntry(15, 1.0)
    current = index.get(keys[1])
    assert current is not None
    index.forget(keys[1], current)
    assert index.get(keys[1]) is None
    assert (len(index), index.total_bytes) == (1, 15)


def test_take_oldest_skips_refused_keys_and_stops_once_under() -> None:
    index, keys = index_of(10, 10, 10, 10, 10)
    asked: list[Digest] = []

    def may_take(key: Digest) -> bool:
        asked.append(key)
        return key != keys[0]  # being written

    assert index.take_oldest(50, may_take) == []
    assert asked == []
    victims = index.take_oldest(30, may_take)
    assert victims == [(keys[1], IndexEntry(10, 0.0)), (keys[2], IndexEntry(10, 0.0))]
    assert asked == keys[:3]
    assert list(index) == [keys[0], keys[3], keys[4]]
    assert index.total_bytes == 30


def test_entries_is_a_copy_oldest_first() -> None:
    index, keys = index_of(1, 2)
    copy = index.entries()
    index.insert(digest(7), 3, 0.0)
    assert [key for key, _ in copy] == keys
