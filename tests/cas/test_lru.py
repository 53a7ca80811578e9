"""Lru: order of use, the running total of weights, eviction with a may-evict predicate."""

from __future__ import annotations

from collections import OrderedDict

from cas.lru import Lru


def by_length() -> Lru[str, bytes]:
    return Lru(len)


def test_put_keeps_use_order_and_the_total() -> None:
    lru = by_length()
    lru.put("a", b"1")
    lru.put("b", b"22")
    lru.put("c", b"333")
    assert list(lru) == ["a", "b", "c"]
    assert list(lru.items()) == [("a", b"1"), ("b", b"22"), ("c", b"333")]
    assert (len(lru), lru.total) == (3, 6)
    assert "b" in lru and "z" not in lru


def test_replacing_a_value_makes_it_newest_and_reweighs_it() -> None:
    lru = by_length()
    lru.put("a", b"1")
    lru.put("b", b"22")
    lru.put("a", b"4444")
    assert list(lru) == ["b", "a"]
    assert lru.total == 6


def test_get_refreshes_and_peek_does_not() -> None:
    lru = by_length()
    for key in "abc":
        lru.put(key, key.encode())
    assert lru.peek("a") == b"a"
    assert list(lru) == ["a", "b", "c"]
    assert lru.get("a") == b"a"
    assert list(lru) == ["b", "c", "a"]
    assert lru.get("z") is None and lru.peek("z") is None
    assert list(lru) == ["b", "c", "a"]


def test_accessors_are_peek_and_refresh_for_hot_loops() -> None:
    lru = by_length()
    for key in "abc":
        lru.put(key, key.encode())
    peek, refresh = lru.accessors()
    assert peek("b") == b"b" and peek("z") is None
    refresh("a")
    assert list(lru) == ["b", "c", "a"]
    assert lru.total == 3


def test_pop_removes_and_adjusts_the_total() -> None:
    lru = by_length()
    lru.put("a", b"1")
    lru.put("b", b"22")
    assert lru.pop("b") == b"22"
    assert lru.pop("b") is None
    assert (list(lru), lru.total) == (["a"], 1)


def test_clear_drops_everything() -> None:
    lru = by_length()
    lru.put("a", b"1")
    lru.clear()
    assert (len(lru), lru.total, lru.get("a")) == (0, 0, None)


def test_evict_removes_the_oldest_until_the_total_fits() -> None:
    lru = by_length()
    for key, value in [("a", b"1"), ("b", b"22"), ("c", b"333"), ("d", b"4444")]:
        lru.put(key, value)
    assert lru.evict(100) == []
    assert lru.evict(7) == [("a", b"1"), ("b", b"22")]
    assert (list(lru), lru.total) == (["c", "d"], 7)
    assert lru.evict(0) == [("c", b"333"), ("d", b"4444")]
    assert (len(lru), lru.total) == (0, 0)


def test_evict_skips_keys_it_may_not_evict_and_asks_only_while_over() -> None:
    lru = by_length()
    for key in "abcde":
        lru.put(key, b"xx")
    asked: list[str] = []

    def may_evict(key: str) -> bool:
        asked.append(key)
        return key != "a"  # "a" is pinned

    assert lru.evict(6, may_evict) == [("b", b"xx"), ("c", b"xx")]
    assert asked == ["a", "b", "c"]  # never asked about "d" or "e": the total already fit
    assert (list(lru), lru.total) == (["a", "d", "e"], 6)


def test_evict_stops_at_what_it_may_take() -> None:
    lru = by_length()
    for key in "abc":
        lru.put(key, b"xx")
    assert lru.evict(0, lambda key: key == "b") == [("b", b"xx")]
    assert (list(lru), lru.total) == (["a", "c"], 4)


def test_without_weigh_the_total_counts_entries() -> None:
    lru: Lru[str, int] = Lru()
    for number, key in enumerate("abcd"):
        lru.put(key, number)
    assert lru.total == 4
    lru.get("a")
    assert lru.evict(2) == [("b", 1), ("c", 2)]
    assert list(lru) == ["d", "a"]


def test_zero_is_a_value_not_an_absence() -> None:
    lru: Lru[str, int] = Lru(int)
    lru.put("empty", 0)
    assert lru.get("empty") == 0 and lru.pop("empty") == 0
    assert len(lru) == 0


def test_entries_are_taken_oldest_first_and_an_ordered_dict_is_adopted() -> None:
    entries = OrderedDict([("a", b"1"), ("b", b"22")])
    lru = Lru(len, entries)
    assert (list(lru), lru.total) == (["a", "b"], 3)
    lru.get("a")
    assert list(entries) == ["b", "a"]  # adopted, not copied: millions of entries at open
    assert list(Lru(len, [("x", b"1"), ("y", b"1")])) == ["x", "y"]
