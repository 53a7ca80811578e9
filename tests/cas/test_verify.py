"""VerifyingStore: bad uploads are refused and leave nothing behind; the empty blob always exists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cas.digest import BLAKE3, Digest
from cas.errors import InvalidArgument, OutOfRange
from cas.memory import MemoryStore
from cas.decorators.verify import VerifyingStore
from tests.cas.streams import blob, chunks_of, read_all, read_chunks


@pytest.fixture
def inner() -> MemoryStore:
    return MemoryStore(64 << 20, name="inner")


@pytest.fixture
def store(inner: MemoryStore) -> VerifyingStore:
    return VerifyingStore(inner)


async def test_wrong_size_is_refused(store: VerifyingStore, inner: MemoryStore) -> None:
    digest, data = blob(1, 1000)
    with pytest.raises(InvalidArgument, match="digest size 1000 does not match 999 bytes received"):
        await store.write(digest, chunks_of(data[:-1], 100))
    with pytest.raises(InvalidArgument, match="does not match 999 bytes"):
        await store.put_bytes(digest, data[:-1])
    assert len(inner) == 0


async def test_wrong_hash_is_refused(store: VerifyingStore, inner: MemoryStore) -> None:
    digest, data = blob(2, 1000)
    tampered = data[:500] + b"X" + data[501:]
    with pytest.raises(InvalidArgument, match=f"digest hash {digest.hash} does not match the SHA256"):
        await store.write(digest, chunks_of(tampered, 100))
    with pytest.raises(InvalidArgument, match="does not match the SHA256"):
        await store.put_bytes(digest, tampered)
    assert len(inner) == 0


async def test_too_many_bytes_abort_mid_stream(store: VerifyingStore, inner: MemoryStore) -> None:
    digest, data = blob(3, 1000)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 1
            yield data[:300]

    with pytest.raises(InvalidArgument, match="digest size 1000 does not match 1200 bytes received"):
        await store.write(digest, endless())
    assert sent == 4, "the upload is cut off at the first chunk past the size"
    assert len(inner) == 0
    assert await store.find_missing([digest]) == {digest}


async def test_blake3_is_checked_with_blake3(store: VerifyingStore) -> None:
    data = b"hashed with blake3"
    digest = Digest.of(data, BLAKE3.function)
    await store.write(digest, chunks_of(data, 4))
    assert await read_all(store, digest) == data
    as_sha256 = Digest.of(data)
    wrong = Digest(as_sha256.hash, as_sha256.size_bytes, BLAKE3.function)
    with pytest.raises(InvalidArgument, match="does not match the BLAKE3"):
        await store.put_bytes(wrong, data)


async def test_large_chunks_are_hashed_correctly(store: VerifyingStore) -> None:
    """Chunks past THREADED_HASH_THRESHOLD are hashed in a thread; the result must be the same."""
    digest, data = blob(4, 3 << 20)
    await store.write(digest, chunks_of(data, 1 << 20))
    assert await store.get_bytes(digest) == data


async def test_put_many_refuses_only_the_bad_ones(store: VerifyingStore, inner: MemoryStore) -> None:
    good, good_data = blob(5, 100)
    bad, _ = blob(6, 100)
    failures = await store.put_many({good: good_data, bad: good_data, Digest.empty(): b""})
    assert set(failures) == {bad}
    assert "does not match" in failures[bad].message
    assert await inner.get_many([good, bad]) == {good: good_data}
    assert not await inner.has(Digest.empty()), "the empty blob is never stored"


@pytest.mark.parametrize("function", [Digest.empty().function, BLAKE3.function])
async def test_the_empty_blob_always_exists(store: VerifyingStore, inner: MemoryStore, function: int) -> None:
    empty = Digest.empty(function)
    assert await store.find_missing([empty, empty]) == set()
    assert await store.has(empty)
    assert await read_all(store, empty) == b""
    assert await store.get_bytes(empty) == b""
    assert await store.get_or_none(empty) == b""
    assert await store.get_many([empty]) == {empty: b""}
    await store.write(empty, chunks_of(b""))
    await store.put_bytes(empty, b"")
    assert len(inner) == 0


async def test_the_empty_blob_refuses_content_and_offsets(store: VerifyingStore) -> None:
    with pytest.raises(InvalidArgument, match="digest size 0 does not match 1 bytes"):
        await store.write(Digest.empty(), chunks_of(b"x"))
    with pytest.raises(OutOfRange, match="past the end"):
        await read_chunks(store, Digest.empty(), offset=1)


async def test_find_missing_passes_real_digests_to_the_inner_store(store: VerifyingStore) -> None:
    present, data = blob(7, 10)
    await store.put_bytes(present, data)
    absent, _ = blob(8, 10)
    assert await store.find_missing([present, absent, Digest.empty()]) == {absent}


async def test_get_many_answers_the_empty_blob_among_others_and_passes_the_rest_whole(
        store: VerifyingStore, inner: MemoryStore) -> None:
    good, good_data = blob(7, 100)
    await inner.put_many({good: good_data})
    missing, _ = blob(8, 100)
    assert await store.get_many([good, Digest.empty(), missing]) == {good: good_data, Digest.empty(): b""}
    assert await store.get_many([good, missing]) == {good: good_data}  # no empty blob: one pass in C
    assert await store.get_many(iter([good])) == {good: good_data}  # any iterable, read once
