"""DigestFilter: the Bloom filter bots summarise their caches with (docs/BOTS_PROTOCOL.md section 8)."""

from __future__ import annotations

import os

import pytest

from cas.digest import Digest
from cas.digest_filter import DigestFilter, holds, probe_seeds


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
