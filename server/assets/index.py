"""The asset index: (uri, qualifiers) -> digest, and checksum -> digest, in a BlobStore.

Entries live in a configured store (on disk by default), so they survive restarts.
Keys are SHA-256 digests of a canonical JSON form of what identifies the asset:
instance name, kind (blob or directory), URI, every qualifier, and the digest
function. Hashing the key means qualifiers that carry credentials
(``http_header:Authorization``) are never stored in readable form, and values hold
no qualifiers at all.

A second kind of entry maps a checksum the server computed itself (``sha256:<hex>``)
to the digest of that content, so a later fetch with the same ``checksum.sri`` is
answered without touching the network, whatever its URI. Checksums claimed by a
pushing client are recorded only when the digest itself proves them.

The index store must be a plain store (memory, disk, redis): a verifying store
would reject values whose hash is not their key.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cas.digest import Digest, DigestFunctionValue
from cas.errors import InvalidArgument
from cas.store import BlobStore
from server.assets.sri import Checksum

log = logging.getLogger("reapi.assets")

KEY_VERSION = "reapi-asset-index-v1"
BLOB = "blob"
DIRECTORY = "directory"

Clock = Callable[[], float]


@dataclass(frozen=True)
class AssetEntry:
    """What a URI (plus qualifiers) resolves to, and for how long."""

    kind: str  # BLOB or DIRECTORY
    digest: Digest  # the blob, or the root Directory
    fetched_at: float  # seconds since the epoch: push time, or when the origin fetch started
    expires_at: float | None = None  # None: no expiry of its own
    pushed: bool = False
    referenced_blobs: tuple[Digest, ...] = ()
    referenced_directories: tuple[Digest, ...] = ()

    def is_live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def satisfies(self, oldest_accepted: float | None) -> bool:
        return oldest_accepted is None or self.fetched_at >= oldest_accepted

    def to_json(self) -> bytes:
        def digest(d: Digest) -> list[Any]:
            return [d.hash, d.size_bytes]

        return json.dumps(
            {
                "kind": self.kind,
                "function": self.digest.function,
                "digest": digest(self.digest),
                "fetched_at": self.fetched_at,
                "expires_at": self.expires_at,
                "pushed": self.pushed,
                "blobs": [digest(d) for d in self.referenced_blobs],
                "directories": [digest(d) for d in self.referenced_directories],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AssetEntry:
        raw = json.loads(data)
        function = int(raw["function"])

        def digest(parts: list[Any]) -> Digest:
            return Digest.parse(str(parts[0]), int(parts[1]), function)

        return cls(
            kind=str(raw["kind"]),
            digest=digest(raw["digest"]),
            fetched_at=float(raw["fetched_at"]),
            expires_at=None if raw.get("expires_at") is None else float(raw["expires_at"]),
            pushed=bool(raw.get("pushed", False)),
            referenced_blobs=tuple(digest(d) for d in raw.get("blobs", [])),
            referenced_directories=tuple(digest(d) for d in raw.get("directories", [])),
        )


@dataclass(frozen=True)
class AssetKey:
    """Everything that identifies one asset; ``digest`` is its storage key."""

    instance: str
    kind: str
    uri: str
    qualifiers: tuple[tuple[str, str], ...]
    function: DigestFunctionValue
    digest: Digest = field(init=False, compare=False)

    def __post_init__(self) -> None:
        canonical = json.dumps(
            [KEY_VERSION, self.instance, self.kind, self.uri, [list(p) for p in self.qualifiers], self.function],
            separators=(",", ":"),
        ).encode()
        object.__setattr__(self, "digest", Digest.of(canonical))


def checksum_key(instance: str, checksum: Checksum, function: DigestFunctionValue) -> Digest:
    canonical = json.dumps([KEY_VERSION, instance, "checksum", checksum.algorithm, checksum.hex, function]).encode()
    return Digest.of(canonical)


class AssetIndex:
    """Reads and writes index entries; the clock decides expiry."""

    def __init__(self, store: BlobStore, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock

    async def get(self, key: AssetKey) -> AssetEntry | None:
        """The live entry for ``key``, or None (absent, expired, or unreadable)."""
        data = await self.store.get_or_none(key.digest)
        if data is None:
            return None
        try:
            entry = AssetEntry.from_json(data)
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            # A damaged entry is a miss; the next fetch or push overwrites it.
            log.warning("asset index entry %s is unreadable (%s); treating it as absent", key.digest, exc)
            return None
        if entry.kind != key.kind or entry.digest.function != key.function or not entry.is_live(self.clock()):
            return None
        return entry

    async def put(self, keys: Iterable[AssetKey], entry: AssetEntry) -> None:
        value = entry.to_json()
        for key in keys:
            await self.store.put_bytes(key.digest, value)

    async def get_by_checksum(self, instance: str, checksum: Checksum, function: DigestFunctionValue) -> Digest | None:
        data = await self.store.get_or_none(checksum_key(instance, checksum, function))
        if data is None:
            return None
        try:
            hash_hex, size = json.loads(data)
            return Digest.parse(str(hash_hex), int(size), function)
        except (ValueError, TypeError, InvalidArgument) as exc:
            log.warning("asset checksum entry for %s is unreadable (%s); treating it as absent", checksum, exc)
            return None

    async def put_checksums(self, instance: str, checksums: Iterable[Checksum], digest: Digest) -> None:
        """Record that ``digest`` has each of ``checksums`` (only ones the server verified)."""
        value = json.dumps([digest.hash, digest.size_bytes]).encode()
        for checksum in checksums:
            await self.store.put_bytes(checksum_key(instance, checksum, digest.function), value)
