"""cas/ac/known_references.py: remembered only for the very same stored bytes, and bounded."""

from __future__ import annotations

from cas.ac.known_references import KnownReferences
from cas.digest import Digest


def digests(count: int, seed: str) -> list[Digest]:
    return [Digest.of(f"{seed}-{i}".encode()) for i in range(count)]


def test_known_only_for_the_same_stored_bytes() -> None:
    known = KnownReferences()
    action = Digest.of(b"action")
    blobs = digests(3, "a")
    assert known.blobs(action, b"stored") is None
    known.remember(action, b"stored", blobs)
    assert known.blobs(action, b"stored") == tuple(blobs)
    assert known.blobs(action, b"stored again, differently") is None
    assert known.blobs(Digest.of(b"another action"), b"stored") is None
    known.forget(action)
    assert known.blobs(action, b"stored") is None


def test_bounded_by_the_digests_held_least_recently_answered_first() -> None:
    known = KnownReferences(max_digests=25)
    actions = digests(3, "action")
    for action in actions:
        known.remember(action, action.hash.encode(), digests(7, action.hash))  # 8 each with the entry
    assert len(known) == 3
    assert known.blobs(actions[0], actions[0].hash.encode()) is not None  # now the most recent
    known.remember(Digest.of(b"fourth"), b"fourth", digests(7, "fourth"))
    assert len(known) == 3
    assert known.blobs(actions[1], actions[1].hash.encode()) is None  # the least recently answered went
    assert known.blobs(actions[0], actions[0].hash.encode()) is not None


def test_stored_bytes_count_towards_the_bound() -> None:
    """A result with large inline output weighs its bytes, not only its digests."""
    known = KnownReferences(max_digests=25)
    large, stored = Digest.of(b"large"), b"x" * (30 * 200)  # 30 digests' worth: over the bound alone
    known.remember(large, stored, digests(1, "large"))
    assert known.blobs(large, stored) is None
    assert len(known) == 0
