"""Rendezvous (highest random weight) hashing: which weighted shard owns a digest.

Every shard scores every key with a hash of (shard name, key); the highest score
wins. A shard's score is ``weight / -ln(u)`` for a uniform ``u`` in (0, 1), so
shards win in proportion to their weights. Adding a shard moves only the keys it
now wins; removing one moves only the keys it held, each to the shard that scored
second for it. Nothing else remaps: no table to rebalance, no ring to keep.

The keys scored are not digests but one of 65,536 buckets: the first four hex
digits of the digest's hash (the hash is already uniform, so buckets share it out
evenly and the moves above hold per bucket). That turns a per-digest cost of one
hash per shard into a list lookup once a bucket has been scored, which matters for
FindMissingBlobs of 10,000 digests. Buckets are scored on first use, so building
the table costs nothing at startup.

Shards are named, not numbered: the name is what is hashed, so every server that
names its shards alike routes alike, whatever their order in the file.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

BUCKET_HEX_DIGITS = 4
BUCKETS = 16**BUCKET_HEX_DIGITS
_UNSCORED = -1
_TWO_TO_64 = float(1 << 64)


def _name_key(name: str) -> bytes:
    """A shard name as a blake2b key (names may be longer than its 64-byte limit)."""
    return hashlib.blake2b(name.encode(), digest_size=32).digest()


def _score(name_key: bytes, weight: float, bucket_bytes: bytes) -> float:
    """A shard's score for one bucket: ``weight / -ln(u)``, ``u`` uniform in (0, 1)."""
    value = int.from_bytes(hashlib.blake2b(bucket_bytes, key=name_key, digest_size=8).digest(), "big")
    return weight / -math.log((value + 0.5) / _TWO_TO_64)


class Rendezvous:
    """The owner of each bucket among named, weighted shards."""

    def __init__(self, shards: Sequence[tuple[str, float]]) -> None:
        if not shards:
            raise ValueError("a sharding store needs at least one shard")
        names = [name for name, _ in shards]
        if len(set(names)) != len(names):
            raise ValueError(f"shards named more than once: {sorted({n for n in names if names.count(n) > 1})}")
        for name, weight in shards:
            if not weight > 0:
                raise ValueError(f"shard {name!r} has weight {weight}; weights must be positive")
        self.shards = list(shards)
        self._keys = [_name_key(name) for name in names]
        self._owners = [_UNSCORED] * BUCKETS

    def owner(self, hash_hex: str) -> int:
        """The index (in the order given) of the shard that owns this hash."""
        bucket = int(hash_hex[:BUCKET_HEX_DIGITS], 16)
        owner = self._owners[bucket]
        if owner == _UNSCORED:
            owner = self._owners[bucket] = self._score_bucket(bucket)
        return owner

    def _score_bucket(self, bucket: int) -> int:
        data = bucket.to_bytes(4, "big")
        best, best_score = 0, -1.0
        for index, ((_, weight), key) in enumerate(zip(self.shards, self._keys)):
            shard_score = _score(key, weight, data)
            if shard_score > best_score:
                best, best_score = index, shard_score
        return best
