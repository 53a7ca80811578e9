"""CacheIndex: which blobs the FileCache holds in either mode, kept right through every change."""

from __future__ import annotations

from cas.digest import Digest
from worker.cache_index import CacheIndex, count_in, count_out


def _digests(count: int) -> list[Digest]:
    return [Digest.of(f"blob {i}".encode()) for i in range(count)]


def _uncached_one_by_one(index: CacheIndex, digests: list[Digest]) -> set[Digest]:
    return {d for d in digests if (d, False) not in index and (d, True) not in index}


def test_uncached_follows_put_pop_evict_and_clear() -> None:
    a, b, c, d = _digests(4)
    index = CacheIndex([((a, False), 10), ((a, True), 10)])
    assert index.uncached([a, b, c, d]) == {b, c, d}
    index.put((b, True), 5)
    index.put((b, True), 5)  # replaced, not counted twice
    index.pop((b, True))
    assert index.uncached([b]) == {b}
    index.pop((a, False))  # the other mode is still cached
    assert index.uncached([a]) == set() and not index.holds_none([a, c])
    index.put((c, False), 1 << 20)
    evicted = index.evict(100, lambda key: key[0] != a)
    assert [key for key, _ in evicted] == [(c, False)]
    assert index.uncached([a, b, c, d]) == {b, c, d} == _uncached_one_by_one(index, [a, b, c, d])
    assert index.holds_none([b, c, d])
    index.clear()
    assert index.uncached([a]) == {a} and len(index) == 0


def test_uncached_matches_the_index_after_many_changes() -> None:
    digests = _digests(50)
    index = CacheIndex()
    for i, digest in enumerate(digests):
        index.put((digest, i % 3 == 0), i + 1)
        if i % 4 == 0:
            index.put((digest, i % 3 != 0), i + 1)
        if i % 5 == 0:
            index.pop((digest, i % 3 == 0))
    index.evict(index.total // 2)
    assert index.uncached(digests) == _uncached_one_by_one(index, digests)


def test_absent_gives_the_modes_wanted_of_blobs_neither_cached_nor_busy() -> None:
    a, b, c, d = _digests(4)
    index = CacheIndex([((a, True), 1)])
    cold = [(b, True), (c, False), (d, False)]
    assert index.absent(cold, {}) == {b: (True,), c: (False,), d: (False,)}
    assert list(index.absent(cold, {})) == [b, c, d]  # in key order
    mixed = [(a, False), (b, False), (b, True), (c, False), (d, True)]
    assert index.absent(mixed, {d: object()}) == {b: (False, True), c: (False,)}


def test_counts_in_and_out_as_one_key_at_a_time() -> None:
    counts: dict[str, int] = {}
    count_in(counts, ["a", "b"])  # none counted yet: the whole batch at once
    count_in(counts, {"b", "c"})  # b counted already: key by key
    assert counts == {"a": 1, "b": 2, "c": 1}
    count_out(counts, ["a", "b"])
    assert counts == {"b": 1, "c": 1}
    count_out(counts, ["b", "c"])
    assert counts == {}
