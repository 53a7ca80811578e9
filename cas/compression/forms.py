"""Compressed forms of blobs: made on the way out, the ones asked for again kept for a while.

The stores keep blobs uncompressed (docs/BENCHMARKS.md has the measurement behind
that choice: reads at any offset, and identity reads, which are most reads, stay as
they are), so a compressed read compresses as it streams. A blob read compressed a
second time while it is remembered is worth keeping: its compressed form goes into a
small LRU bounded in bytes (``max_bytes``; a form over a quarter of that is never
kept), and later reads stream it without compressing again. Forms are content
addressed, so instances share them; each read still asks the instance's own store
whether it holds the blob (refreshing it there), so a cached form never answers for
a blob the instance does not have.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import NamedTuple

from cas.compression.codecs import Codec
from cas.compression.streams import compressed
from cas.digest import Digest
from cas.errors import NotFound
from cas.store import READ_CHUNK_SIZE, BlobStore, closing

DEFAULT_MAX_BYTES = 64 << 20
# How many (blob, compressor) pairs are remembered as read once, waiting for a second read.
SEEN_ENTRIES = 4096


class FormKey(NamedTuple):
    digest: Digest
    compressor: int


class CompressedForms:
    """Compressed reads of any store, with the often-read forms cached (bounded)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_form_bytes = max_bytes // 4  # one form never fills the cache
        self.total = 0
        self.hits = 0
        self.misses = 0
        self._forms: OrderedDict[FormKey, bytes] = OrderedDict()
        self._seen: OrderedDict[FormKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._forms)

    def cached(self, digest: Digest, codec: Codec) -> bytes | None:
        """The kept form, now the most recently used; None if not kept."""
        key = FormKey(digest, codec.value)
        form = self._forms.get(key)
        if form is not None:
            self._forms.move_to_end(key)
        return form

    async def read(self, store: BlobStore, digest: Digest, codec: Codec, offset: int = 0) -> AsyncIterator[bytes]:
        """The compressed form of the blob's bytes from ``offset`` (an uncompressed offset, as
        REv2 defines it for compressed reads); NotFound and OutOfRange as ``store.read``."""
        if offset == 0:
            form = self.cached(digest, codec)
            if form is not None:
                if not await store.has(digest):
                    raise NotFound(f"blob {digest} is not in the CAS")
                self.hits += 1
                for start in range(0, len(form), READ_CHUNK_SIZE):
                    yield form[start : start + READ_CHUNK_SIZE]
                return
        self.misses += 1
        keep = offset == 0 and self._wanted_again(digest, codec)
        kept: list[bytes] = []
        async with closing(store.read(digest, offset)) as source:  # closed now if the reader stops early
            async for piece in compressed(source, codec):
                if keep:
                    kept.append(piece)
                yield piece
        if keep:
            self._keep(FormKey(digest, codec.value), b"".join(kept))

    async def compress_whole(self, digest: Digest, data: bytes, codec: Codec) -> bytes:
        """The compressed form of a blob already in memory (batch reads), kept like a read's."""
        form = self.cached(digest, codec)
        if form is not None:
            self.hits += 1
            return form
        self.misses += 1
        form = codec.compress(data)
        if self._wanted_again(digest, codec):
            self._keep(FormKey(digest, codec.value), form)
        return form

    def _wanted_again(self, digest: Digest, codec: Codec) -> bool:
        """Whether this is a second read of the form (the first one is only remembered)."""
        if digest.size_bytes > self.max_form_bytes * 8:
            return False  # its form would hardly fit; do not even remember it
        key = FormKey(digest, codec.value)
        if key in self._seen:
            del self._seen[key]
            return True
        self._seen[key] = None
        while len(self._seen) > SEEN_ENTRIES:
            self._seen.popitem(last=False)
        return False

    def _keep(self, key: FormKey, form: bytes) -> None:
        if len(form) > self.max_form_bytes:
            return
        old = self._forms.pop(key, None)
        if old is not None:
            self.total -= len(old)
        self._forms[key] = form
        self.total += len(form)
        while self.total > self.max_bytes:
            _, evicted = self._forms.popitem(last=False)
            self.total -= len(evicted)

