"""SplitBlob and SpliceBlob over real gRPC (server/blob_splits.py): chunks that are FastCDC 2020's,
all in the CAS and rejoining to the blob; splices checked before anything is stored."""

from __future__ import annotations

import os
import random

import grpc

from cas.chunking.fastcdc import FastCdc
from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.blob_splits import BlobSplits
from tests.server.client import StorageClient, expect_error

FAST_CDC = re_pb2.ChunkingFunction.FAST_CDC_2020
BLAKE3 = re_pb2.DigestFunction.BLAKE3
RNG = random.Random(14)
# Large enough for several 512 KiB-average chunks; a mix of noise and text, like a binary.
DATA = b"".join(RNG.randbytes(700_000) + (b"symbol table entry %d\n" % i) * 3000 for i in range(8))


async def split(client: StorageClient, digest: Digest, function: re_pb2.DigestFunction.Value = re_pb2.DigestFunction.UNKNOWN, chunking: re_pb2.ChunkingFunction.Value = re_pb2.ChunkingFunction.UNKNOWN) -> list[Digest]:
    response = await client.cas.SplitBlob(
        re_pb2.SplitBlobRequest(blob_digest=digest.to_proto(), digest_function=function, chunking_function=chunking)
    )
    assert response.chunking_function == FAST_CDC
    return [Digest.from_proto(d, function) for d in response.chunk_digests]


async def splice(client: StorageClient, blob: Digest, chunks: list[Digest], function: re_pb2.DigestFunction.Value = re_pb2.DigestFunction.UNKNOWN) -> re_pb2.SpliceBlobResponse:
    return await client.cas.SpliceBlob(re_pb2.SpliceBlobRequest(
        blob_digest=blob.to_proto(), chunk_digests=[c.to_proto() for c in chunks],
        digest_function=function, chunking_function=FAST_CDC,
    ))


async def rejoin(client: StorageClient, chunks: list[Digest]) -> bytes:
    return b"".join([await client.read(chunk) for chunk in chunks])


async def test_split_answers_fastcdc_chunks_that_are_stored_and_rejoin(client: StorageClient) -> None:
    await client.write(DATA)
    digest = Digest.of(DATA)
    chunks = await split(client, digest, chunking=re_pb2.ChunkingFunction.REP_MAX_CDC)  # the server may choose
    assert [c.size_bytes for c in chunks] == FastCdc().split(DATA) and len(chunks) >= 3
    assert await client.missing(chunks) == set()
    assert await rejoin(client, chunks) == DATA
    assert await split(client, digest) == chunks  # the same again (remembered)


async def test_split_of_small_empty_and_absent_blobs(client: StorageClient) -> None:
    small = await client.upload(b"smaller than the minimum chunk")
    assert await split(client, small) == [small]
    assert await split(client, Digest.empty()) == []
    absent = Digest.of(b"absent")
    assert str(absent) in await expect_error(split(client, absent), grpc.StatusCode.NOT_FOUND)


async def test_a_client_uploads_only_new_chunks_and_splices_them(client: StorageClient, cas_memory: MemoryStore) -> None:
    """What a chunking client does: split locally, send what the CAS lacks, splice."""
    cdc = FastCdc()
    old = DATA
    await client.write(old)
    old_chunks = await split(client, Digest.of(old))
    new = old[:300_000] + b"a patched function\n" + old[300_000:]
    pieces = []
    at = 0
    for length in cdc.split(new):
        pieces.append(new[at : at + length])
        at += length
    new_chunks = [Digest.of(p) for p in pieces]
    missing = await client.missing(new_chunks)
    assert 0 < len(missing) < len(new_chunks)  # content-defined: most chunks are shared
    for piece in pieces:
        if Digest.of(piece) in missing:
            await client.upload(piece)
    blob = Digest.of(new)
    response = await splice(client, blob, new_chunks)
    assert Digest.from_proto(response.blob_digest) == blob
    assert await client.read(blob) == new
    assert set(old_chunks) & set(new_chunks)
    # Splicing a blob that is there is a no-op.
    assert Digest.from_proto((await splice(client, blob, new_chunks)).blob_digest) == blob


async def test_splices_that_do_not_add_up_store_nothing(client: StorageClient, cas_memory: MemoryStore) -> None:
    parts = [os.urandom(1000), os.urandom(2000), os.urandom(500)]
    chunks = [await client.upload(p) for p in parts]
    stored = len(cas_memory)
    whole = b"".join(parts)
    # Same size, other content: the digest check fails as the bytes pass.
    wrong = Digest(Digest.of(whole[::-1]).hash, len(whole))
    message = await expect_error(splice(client, wrong, chunks), grpc.StatusCode.INVALID_ARGUMENT)
    assert wrong.hash in message and "does not match" in message
    # Chunks in the wrong order.
    await expect_error(splice(client, Digest.of(whole), chunks[::-1]), grpc.StatusCode.INVALID_ARGUMENT)
    # Sizes that cannot add up: refused before reading anything.
    message = await expect_error(splice(client, Digest.of(whole), chunks[:2]), grpc.StatusCode.INVALID_ARGUMENT)
    assert "add up to 3000 bytes" in message
    # A chunk that is not there.
    gone = Digest.of(b"x" * 500)
    message = await expect_error(splice(client, Digest.of(parts[0] + parts[1] + b"x" * 500), chunks[:2] + [gone]),
                                 grpc.StatusCode.NOT_FOUND)
    assert str(gone) in message
    assert len(cas_memory) == stored
    assert await client.missing([Digest.of(whole)]) == {Digest.of(whole)}


async def test_split_and_splice_with_blake3(client: StorageClient) -> None:
    data = DATA[:2_500_000]
    blob = Digest.of(data, BLAKE3)
    pieces, at = [], 0
    for length in FastCdc().split(data):
        pieces.append(data[at : at + length])
        at += length
    chunks = [await client.upload(p, function=BLAKE3) for p in pieces]
    await splice(client, blob, chunks, function=BLAKE3)
    assert await split(client, blob, function=BLAKE3) == chunks


async def test_a_remembered_split_whose_chunk_was_evicted_is_made_again() -> None:
    inner = MemoryStore(64 << 20)
    cas = VerifyingStore(inner)
    splits = BlobSplits()
    digest = Digest.of(DATA)
    await cas.put_bytes(digest, DATA)
    chunks = await splits.split(cas, digest)
    inner._values.pop(chunks[1])  # evicted
    assert await cas.find_missing(chunks) == {chunks[1]}
    assert await splits.split(cas, digest) == chunks
    assert await cas.find_missing(chunks) == set()
