"""ingest(): the direct and spooled paths into plain and verifying stores."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from cas.digest import Digest
from cas.errors import Aborted
from cas.memory import MemoryStore
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.assets.ingest import ingest
from server.assets.spool import Spool
from server.assets.sri import Checksum

SHA256 = re_pb2.DigestFunction.SHA256
DATA = bytes(range(256)) * 1000  # several chunks, some over the threaded-hash threshold


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def new_store(kind: str) -> BlobStore:
    return VerifyingStore(MemoryStore(1 << 24)) if kind == "verifying" else MemoryStore(1 << 24)


@pytest.mark.parametrize("kind", ["plain", "verifying"])
@pytest.mark.parametrize("size_known", [True, False], ids=["direct", "spooled"])
async def test_matching_checksum_is_stored(kind: str, size_known: bool) -> None:
    cas = new_store(kind)
    checksum = Checksum("sha256", hashlib.sha256(DATA).hexdigest())
    result = await ingest(chunks_of(DATA), cas, Spool(memory_limit=1 << 16), SHA256, (checksum,), len(DATA) if size_known else None)
    assert result.digest == Digest.of(DATA)
    assert await cas.get_bytes(result.digest) == DATA


@pytest.mark.parametrize("kind", ["plain", "verifying"])
@pytest.mark.parametrize("size_known", [True, False], ids=["direct", "spooled"])
async def test_mismatch_is_aborted_and_leaves_nothing(kind: str, size_known: bool) -> None:
    cas = new_store(kind)
    wrong = Checksum("sha256", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(Aborted, match="checksum mismatch"):
        await ingest(chunks_of(DATA), cas, Spool(memory_limit=1 << 16), SHA256, (wrong,), len(DATA) if size_known else None, source="src")
    assert not await cas.has(Digest.of(DATA))
    assert not await cas.has(Digest(wrong.hex, len(DATA)))


async def test_held_content_is_not_downloaded_again() -> None:
    cas = VerifyingStore(MemoryStore(1 << 24))
    await cas.put_bytes(Digest.of(DATA), DATA)

    async def must_not_be_read() -> AsyncIterator[bytes]:
        raise AssertionError("the body was read although the CAS holds the content")
        yield b""

    checksum = Checksum("sha256", hashlib.sha256(DATA).hexdigest())
    result = await ingest(must_not_be_read(), cas, Spool(), SHA256, (checksum,), len(DATA))
    assert result.digest == Digest.of(DATA)


async def test_every_requested_hash_is_reported() -> None:
    cas = MemoryStore(1 << 24)
    checksums = (Checksum("sha512", hashlib.sha512(DATA).hexdigest()), Checksum("sha384", "0" * 96))
    result = await ingest(chunks_of(DATA), cas, Spool(), re_pb2.DigestFunction.BLAKE3, checksums, None)
    assert result.digest == Digest.of(DATA, re_pb2.DigestFunction.BLAKE3)
    assert result.hashes["sha512"] == hashlib.sha512(DATA).hexdigest()
    assert result.hashes["sha384"] == hashlib.sha384(DATA).hexdigest()
