"""cas/compression/forms.py: compressed on the way out; a form read twice is kept, within bounds."""

from __future__ import annotations

import os

import pytest

from cas.compression.codecs import DeflateCodec, ZstdCodec
from cas.compression.forms import CompressedForms
from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.errors import NotFound, OutOfRange
from cas.memory import MemoryStore

TEXT = b"".join(b"entry %d: lib/module_%d.o\n" % (i, i % 97) for i in range(40_000))
ZSTD = ZstdCodec()


async def read_all(forms: CompressedForms, store: VerifyingStore, digest: Digest, offset: int = 0) -> bytes:
    return b"".join([piece async for piece in forms.read(store, digest, ZSTD, offset)])


@pytest.fixture
async def store() -> VerifyingStore:
    cas = VerifyingStore(MemoryStore(64 << 20))
    await cas.put_bytes(Digest.of(TEXT), TEXT)
    return cas


async def test_the_second_read_keeps_the_form_and_the_third_uses_it(store: VerifyingStore) -> None:
    forms = CompressedForms()
    digest = Digest.of(TEXT)
    reads = [await read_all(forms, store, digest) for _ in range(3)]
    assert reads[0] == reads[1] == reads[2] and ZSTD.decompress(reads[0], len(TEXT)) == TEXT
    assert (forms.misses, forms.hits, len(forms), forms.total) == (2, 1, 1, len(reads[0]))
    # Another compressor is another form; offsets other than 0 are always compressed afresh.
    assert DeflateCodec().decompress(b"".join([p async for p in forms.read(store, digest, DeflateCodec())]), len(TEXT)) == TEXT
    assert ZSTD.decompress(await read_all(forms, store, digest, offset=1000), len(TEXT)) == TEXT[1000:]
    assert len(forms) == 1


async def test_a_kept_form_still_asks_the_store(store: VerifyingStore) -> None:
    forms = CompressedForms()
    digest = Digest.of(TEXT)
    for _ in range(2):
        await read_all(forms, store, digest)
    with pytest.raises(NotFound):
        await read_all(forms, VerifyingStore(MemoryStore(1 << 20)), digest)
    with pytest.raises(OutOfRange):
        await read_all(forms, store, digest, offset=len(TEXT) + 1)


async def test_the_cache_stays_within_its_bytes_oldest_out() -> None:
    cas = VerifyingStore(MemoryStore(64 << 20))
    blobs = [os.urandom(200_000) for _ in range(6)]  # incompressible: forms as large as the blobs
    for blob in blobs:
        await cas.put_bytes(Digest.of(blob), blob)
    forms = CompressedForms(max_bytes=1 << 20)
    for blob in blobs:
        for _ in range(2):
            await read_all(forms, cas, Digest.of(blob))
    assert forms.total <= 1 << 20 and len(forms) == 5
    assert forms.cached(Digest.of(blobs[0]), ZSTD) is None and forms.cached(Digest.of(blobs[-1]), ZSTD) is not None
    # A form over a quarter of the cache is never kept.
    big = os.urandom(300_000)
    await cas.put_bytes(Digest.of(big), big)
    for _ in range(3):
        await read_all(forms, cas, Digest.of(big))
    assert forms.cached(Digest.of(big), ZSTD) is None
