"""How much one archive or git tree may unpack into the CAS.

An archive is untrusted input, and a few megabytes of tar.gz can expand to
gigabytes: in an LRU cache that evicts everyone else's blobs. Three limits apply:

- **size**: ``[assets] max_unpacked_size``; unset, 1/8 of the capacity of the CAS the
  request writes to (at most 64 GiB; 4 GiB when the CAS has no known size, as with
  Redis or a remote CAS). One fetch may then push out at most an eighth of the
  cache, so a build's working set survives it.
- **ratio**: unpacked content may be at most ``max_compression_ratio`` (100) times the
  archive once it passes 64 MiB. Source archives compress 3-10x, xz up to ~20x;
  bombs compress 1000x or more. Small trees are never refused for their ratio.
- **entries**: ``max_archive_entries`` (250,000): each entry costs the server
  ~1 KiB of memory while the tree is built, and empty files weigh nothing
  against the size limits.

Duplicates count (tar hard links, git blobs used twice): a client that downloads
the tree writes every copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from cas.decorators.read_cache import ReadCachingStore
from cas.decorators.size_partition import SizePartitioningStore
from cas.store import BlobStore, ForwardingStore

CAS_SHARE = 8
MAX_DEFAULT_UNPACKED_SIZE = 64 << 30
UNKNOWN_CAS_UNPACKED_SIZE = 4 << 30
DEFAULT_MAX_ENTRIES = 250_000
DEFAULT_MAX_COMPRESSION_RATIO = 100
RATIO_FREE_BYTES = 64 << 20

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def describe_size(size: int) -> str:
    """``size`` for people: "4 MiB", "2.5 GiB", "100 bytes"."""
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f}".removesuffix(".0") + f" {unit}"


def store_capacity(store: BlobStore) -> int | None:
    """The most bytes ``store`` keeps, looking through decorators; None when it has no known bound."""
    if isinstance(store, ForwardingStore):
        return store_capacity(store.inner)
    if isinstance(store, SizePartitioningStore):
        small, large = store_capacity(store.small), store_capacity(store.large)
        return None if small is None or large is None else small + large
    if isinstance(store, ReadCachingStore):
        return store_capacity(store.slow)  # the fast store only caches what the slow one keeps
    capacity = getattr(store, "max_bytes", None)
    return capacity if isinstance(capacity, int) and not isinstance(capacity, bool) else None


@dataclass(frozen=True)
class UnpackBudget:
    """The limits for one tree, with the setting behind each (for RESOURCE_EXHAUSTED messages)."""

    max_bytes: int
    bytes_rule: str
    max_entries: int

    def bytes_message(self) -> str:
        return f"unpacked content passed the {describe_size(self.max_bytes)} limit ({self.bytes_rule})"

    def entries_message(self) -> str:
        return f"more than {self.max_entries} entries ([assets] max_archive_entries)"


@dataclass(frozen=True)
class UnpackLimits:
    """The ``[assets]`` settings; ``budget`` applies them to one CAS and one archive."""

    max_unpacked_size: int | None = None  # None: from the CAS's capacity
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO  # 0: no ratio limit
    ratio_free_bytes: int = RATIO_FREE_BYTES  # trees up to this size are never refused for their ratio

    def size_limit(self, cas: BlobStore) -> tuple[int, str]:
        if self.max_unpacked_size is not None:
            return self.max_unpacked_size, "[assets] max_unpacked_size"
        capacity = store_capacity(cas)
        if capacity is None:
            return UNKNOWN_CAS_UNPACKED_SIZE, "the CAS has no known size; [assets] max_unpacked_size sets another"
        share = min(capacity // CAS_SHARE, MAX_DEFAULT_UNPACKED_SIZE)
        return share, f"1/{CAS_SHARE} of the CAS's {describe_size(capacity)}; [assets] max_unpacked_size sets another"

    def budget(self, cas: BlobStore, packed_size: int | None = None) -> UnpackBudget:
        """The limits for a tree unpacked into ``cas`` from ``packed_size`` bytes (None: not an archive)."""
        max_bytes, rule = self.size_limit(cas)
        if packed_size is not None and self.max_compression_ratio > 0:
            by_ratio = max(packed_size * self.max_compression_ratio, self.ratio_free_bytes)
            if by_ratio < max_bytes:
                max_bytes = by_ratio
                rule = (
                    f"{self.max_compression_ratio} times the archive's {describe_size(packed_size)}: an archive bomb? "
                    "[assets] max_compression_ratio sets another"
                )
        return UnpackBudget(max_bytes, rule, self.max_entries)
