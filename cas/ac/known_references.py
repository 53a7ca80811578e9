"""KnownReferences: for action results answered before, every blob each references.

A cache hit's completeness check (cas/ac/action_cache.py) must ask the CAS about
every blob the result names on every hit: a blob may go at any time, and the check
refreshes the lifetimes of those that stay. What need not be redone is the work
*before* that question: parsing the stored result, validating its digests, looking
up its Tree blobs. That work depends only on the stored bytes, so it is remembered
here with those bytes, and used again only while the action cache still holds the
very same bytes (a result stored again under the same action, or replaced by other
means, is worked out afresh). A repeat hit then costs one ``find_missing`` over the
remembered digests, and the answer is the stored bytes as they are.

Results with a ``root_directory_digest`` output are not remembered: their check walks
the directory tree through the CAS, which is the question itself.

Bounded by what it holds, in units of one digest's memory: each entry weighs its
digest count plus one, plus its stored bytes in those units (a result with large
inline stdout weighs what it takes); the least recently answered go first.
"""

from __future__ import annotations

from collections.abc import Sequence

from cas.digest import Digest
from cas.lru import Lru

# Digests remembered in all (about 200 bytes each: ~20 MB at most).
DEFAULT_MAX_DIGESTS = 100_000
DIGEST_BYTES = 200  # what a remembered digest costs in memory: stored bytes are weighed in these units


def _weigh(entry: tuple[bytes, tuple[Digest, ...]]) -> int:
    return len(entry[1]) + 1 + len(entry[0]) // DIGEST_BYTES


class KnownReferences:
    """action digest -> (the stored result's bytes, every blob they reference)."""

    def __init__(self, max_digests: int = DEFAULT_MAX_DIGESTS) -> None:
        self._entries: Lru[Digest, tuple[bytes, tuple[Digest, ...]]] = Lru(_weigh)
        self.max_digests = max_digests

    def __len__(self) -> int:
        return len(self._entries)

    def blobs(self, action: Digest, stored: bytes) -> tuple[Digest, ...] | None:
        """The blobs ``stored`` references, if it is the result remembered for ``action``."""
        entry = self._entries.get(action)
        if entry is None or entry[0] != stored:
            return None
        return entry[1]

    def remember(self, action: Digest, stored: bytes, blobs: Sequence[Digest]) -> None:
        """``stored`` (a valid ActionResult whose digests are all valid) references ``blobs``."""
        self._entries.put(action, (stored, tuple(blobs)))
        self._entries.evict(self.max_digests)

    def forget(self, action: Digest) -> None:
        self._entries.pop(action)
