"""DigestFilter: the Bloom filter bots summarise their caches with (docs/BOTS_PROTOCOL.md section 8)."""

from __future__ import annotations

import os

import pytest

from cas.digest import Digest
from cas.digest_filter import DigestFilter, holds, holds_each, probe_seeds


def digests(count: int) -> list[Digest]:
    return [Digest.of(os.urandom(16)) for _ in range(count)]


def test_what_was_added_is_always_found_and_the_rest_seldom() -> None:
    added, others = digests(2000), digests(5000)
    summary = DigestFilter.sized_for(2000, 8 << 10)
    summary.add_all(d.hash for d in added)
    assert all(d.hash in summary for d in added)
    false_positives = sum(d.hash in summary for d in others)
    assert false_positives < 0.05 * len(others)


def test_the_wire_form_round_trips_and_is_tested_where_it_lies() -> None:
    summary = DigestFilter(1024, 4)
    summary.add_all(d.hash for d in digests(50))
    wire = summary.to_bytes()
    assert wire[:2] == bytes((1, 4)) and len(wire) == 2 + 128
    again = DigestFilter.from_bytes(wire)
    assert (again.bits, again.probes, again.array) == (1024, 4, summary.array)
    present = digests(1)[0]
    summary.add(present.hash)
    wire = summary.to_bytes()
    assert holds(wire, 1024, 4, *probe_seeds(present.hash), offset=2)


@pytest.mark.parametrize(("bits", "probes", "added"), [(64, 1, 3), (1024, 4, 50), (8 << 13, 7, 6000), (8 << 10, 16, 900)])
def test_holds_each_answers_as_holds_does_hash_by_hash(bits: int, probes: int, added: int) -> None:
    """The server's whole-array test (for a lease's files) and the one-by-one test agree,
    for filters from nearly empty to saturated, on what was added and what was not."""
    summary = DigestFilter(bits, probes)
    present = digests(added)
    summary.add_all(d.hash for d in present)
    wire = summary.to_bytes()
    asked = [d.hash for d in present + digests(3000)]
    expected = [holds(wire, bits, probes, *probe_seeds(h), offset=2) for h in asked]
    assert holds_each(wire, asked) == expected
    assert all(expected[:added]) and holds_each(wire, []) == []
    if added < bits // 20:  # a sparse filter: most of the others are not held
        assert expected[added:].count(False) > 2000


def test_bits_follow_the_documented_order() -> None:
    """Bit i is array[i >> 3] >> (7 - (i & 7)) & 1 (Redis' GETBIT order), probe j at (h1 + j * h2) mod m."""
    summary = DigestFilter(64, 1)
    hash_hex = "00000009" + "00000000" + "0" * 48  # h1 = 9, h2 = 1: bit 9
    summary.add(hash_hex)
    assert summary.array == bytearray([0, 0b0100_0000, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("wire,problem", [
    (b"", "at least two bytes"),
    (bytes((2, 4)) + bytes(16), "version 2"),
    (bytes((1, 0)) + bytes(16), "probes 1 to 16"),
    (bytes((1, 4)) + bytes(4), "from 64"),
])
def test_malformed_filters_are_refused_saying_why(wire: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DigestFilter.from_bytes(wire)
