"""ByteStream's compressed-blobs over real gRPC: zstd and deflate reads and writes, REv2's offset
and read_limit rules, committed sizes, resumable and already-present uploads, and compressed
streams that do not decode to their digest refused with nothing stored."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest
import zstandard

from cas.compression.codecs import Codec, DeflateCodec, ZstdCodec
from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.app import ReapiServer
from server.resource_names import download_name, upload_name
from tests.server.client import StorageClient, expect_error, stream, write_requests
from tests.support.servers import channel_to, config_for, running_server

# Compressible like build output: repetitive symbol and section text with some noise.
DATA = b"".join(b"obj/%05d.o: .text %08x .rodata %s\n" % (i, i * 2654435761 % 2**32, os.urandom(6).hex().encode())
                for i in range(60_000))
DIGEST = Digest.of(DATA)
CODECS = [ZstdCodec(), DeflateCodec()]


def compressed_name(codec: Codec, digest: Digest = DIGEST, instance: str = "") -> str:
    return download_name(instance, digest, codec.name)


def compressed_upload(codec: Codec, digest: Digest = DIGEST, upload_id: str = "") -> str:
    return upload_name("", upload_id or str(uuid.uuid4()), digest, compressor=codec.name)


async def read_compressed(client: StorageClient, name: str, offset: int = 0, limit: int = 0) -> bytes:
    request = bs_pb2.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit)
    return b"".join([r.data async for r in client.bytestream.Read(request)])


def requests_from(name: str, form: bytes, start: int, chunk: int, finish: bool = True) -> list[bs_pb2.WriteRequest]:
    """A compressed call's messages: offsets start at the uncompressed ``start`` and add compressed bytes."""
    requests = write_requests(name, form, chunk=chunk, finish=finish)
    for request in requests:
        request.write_offset += start
    return requests


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
async def test_reads_in_each_compressor_decode_to_the_blob_from_any_offset(codec: Codec, client: StorageClient) -> None:
    await client.write(DATA)
    form = await read_compressed(client, compressed_name(codec))
    assert len(form) < len(DATA) // 2
    assert codec.decompress(form, len(DATA)) == DATA
    # read_offset is an offset into the uncompressed blob.
    tail = await read_compressed(client, compressed_name(codec), offset=1_000_003)
    assert codec.decompress(tail, len(DATA)) == DATA[1_000_003:]
    assert codec.decompress(await read_compressed(client, compressed_name(codec), offset=len(DATA)), 0) == b""


async def test_compressed_reads_follow_the_plain_reads_rules(client: StorageClient) -> None:
    zstd = CODECS[0]
    await client.write(DATA)
    message = await expect_error(read_compressed(client, compressed_name(zstd), limit=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert "read_limit 10" in message and "must be 0" in message
    await expect_error(read_compressed(client, compressed_name(zstd), offset=len(DATA) + 1), grpc.StatusCode.OUT_OF_RANGE)
    absent = Digest.of(b"absent")
    assert str(absent) in await expect_error(read_compressed(client, compressed_name(zstd, absent)), grpc.StatusCode.NOT_FOUND)
    brotli = f"compressed-blobs/brotli/{DIGEST.hash}/{DIGEST.size_bytes}"
    message = await expect_error(read_compressed(client, brotli), grpc.StatusCode.INVALID_ARGUMENT)
    assert "compressor BROTLI is not supported" in message and "ZSTD, DEFLATE" in message
    # identity under compressed-blobs is a plain read.
    identity = f"compressed-blobs/identity/{DIGEST.hash}/{DIGEST.size_bytes}"
    assert await read_compressed(client, identity, offset=5, limit=10) == DATA[5:15]


async def test_a_blob_read_compressed_again_is_served_from_its_kept_form(storage_server: ReapiServer, client: StorageClient) -> None:
    zstd = CODECS[0]
    await client.write(DATA)
    forms = storage_server.forms
    first = await read_compressed(client, compressed_name(zstd))
    second = await read_compressed(client, compressed_name(zstd))  # compressed again, and kept
    third = await read_compressed(client, compressed_name(zstd))
    assert first == second == third
    assert (forms.misses, forms.hits, len(forms)) == (2, 1, 1)
    # A kept form never answers for an instance whose CAS lacks the blob.
    await expect_error(read_compressed(client, compressed_name(zstd, Digest.of(b"other"))), grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
async def test_compressed_writes_commit_the_compressed_end_and_store_the_blob(
    codec: Codec, client: StorageClient, cas_memory: MemoryStore
) -> None:
    form = codec.compress(DATA)
    # Several messages.
    response = await client.bytestream.Write(stream(requests_from(compressed_upload(codec), form, 0, 50_000)))
    assert response.committed_size == len(form)
    assert await client.read(DIGEST) == DATA
    # One message (the fast path) of another blob.
    small = DATA[:30_000]
    small_form = codec.compress(small)
    [one] = requests_from(compressed_upload(codec, Digest.of(small)), small_form, 0, len(small_form))
    assert (await client.bytestream.Write(stream([one]))).committed_size == len(small_form)
    assert await client.read(Digest.of(small)) == small
    assert len(cas_memory) == 2


async def test_an_existing_blob_ends_a_compressed_write_at_once_with_minus_one(client: StorageClient) -> None:
    zstd = CODECS[0]
    await client.write(DATA)
    name = compressed_upload(zstd)
    first_only = requests_from(name, zstd.compress(DATA)[:1000], 0, 1000, finish=False)
    assert (await client.bytestream.Write(stream(first_only))).committed_size == -1
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (len(DATA), True)


async def test_a_broken_off_compressed_write_resumes_at_the_uncompressed_offset(
    storage_server: ReapiServer, client: StorageClient
) -> None:
    zstd = CODECS[0]
    name = compressed_upload(zstd)
    form = zstd.compress(DATA)
    half = requests_from(name, form[: len(form) // 2], 0, 40_000, finish=False)
    assert "without finish_write" in await expect_error(lambda: client.bytestream.Write(stream(half)), grpc.StatusCode.INVALID_ARGUMENT)
    status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
    committed = status.committed_size
    assert 0 < committed < len(DATA) and not status.complete  # uncompressed bytes decoded so far
    assert await client.missing([DIGEST]) == {DIGEST}
    # The client compresses the rest anew (a new frame) and sends it from that offset.
    rest = zstd.compress(DATA[committed:])
    response = await client.bytestream.Write(stream(requests_from(name, rest, committed, 40_000)))
    assert response.committed_size == committed + len(rest)
    assert await client.read(DIGEST) == DATA
    assert storage_server.uploads is not None and len(storage_server.uploads) == 0


async def test_compressed_offsets_must_follow_the_compressed_bytes_sent(client: StorageClient) -> None:
    zstd = CODECS[0]
    requests = requests_from(compressed_upload(zstd), zstd.compress(DATA), 0, 40_000)
    requests[2].write_offset += 1
    message = await expect_error(lambda: client.bytestream.Write(stream(requests)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "does not follow the 0 bytes committed before this call and 80000 zstd bytes sent in it" in message


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
async def test_streams_that_do_not_decode_to_the_digest_store_nothing(
    codec: Codec, client: StorageClient, cas_memory: MemoryStore
) -> None:
    form = bytearray(codec.compress(DATA))
    corrupt = bytes(form[:5000]) + bytes(b ^ 0x5A for b in form[5000:9000]) + bytes(form[9000:])
    cases = {
        "corrupt": (DIGEST, corrupt),
        "cut short": (DIGEST, bytes(form[:-100])),
        "too long": (Digest(DIGEST.hash, len(DATA) - 1), bytes(form)),
        "too short": (Digest(DIGEST.hash, len(DATA) + 1), bytes(form)),
        "other content": (DIGEST, codec.compress(DATA[::-1])),
    }
    for what, (digest, payload) in cases.items():
        for chunk in (len(payload), 30_000):  # one message, and several
            name = compressed_upload(codec, digest)
            message = await expect_error(
                lambda: client.bytestream.Write(stream(requests_from(name, payload, 0, chunk))), grpc.StatusCode.INVALID_ARGUMENT
            )
            assert message, what
            # Nothing stored, and nothing kept to resume.
            status = await client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name))
            assert (status.committed_size, status.complete) == (0, False), what
    assert len(cas_memory) == 0


async def test_a_zstd_bomb_is_refused_without_storing(client: StorageClient, cas_memory: MemoryStore) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))
    digest = Digest.of(bytes(1 << 20))  # claims 1 MiB
    message = await expect_error(
        lambda: client.bytestream.Write(stream(requests_from(compressed_upload(CODECS[0], digest), bomb, 0, 1000))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "decompresses to more than" in message
    assert len(cas_memory) == 0


async def test_unsupported_compressors_are_refused_on_writes_and_status(client: StorageClient) -> None:
    name = f"uploads/{uuid.uuid4()}/compressed-blobs/brotli/{DIGEST.hash}/{DIGEST.size_bytes}"
    message = await expect_error(lambda: client.bytestream.Write(stream(write_requests(name, b"x"))), grpc.StatusCode.INVALID_ARGUMENT)
    assert "compressor BROTLI is not supported" in message
    await expect_error(
        client.bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=name)), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_a_server_configured_without_compressors_lists_and_serves_none() -> None:
    config = config_for(stores={"cas": {"type": "memory", "max_size": "64MiB"}, "ac": {"type": "memory", "max_size": "1MiB"}})
    config.compressors = ()
    async with running_server(config) as server, channel_to(server) as channel:
        client = StorageClient(channel)
        caps = await client.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest())
        assert list(caps.cache_capabilities.supported_compressors) == []
        assert list(caps.cache_capabilities.supported_batch_update_compressors) == []
        await client.write(DATA)
        message = await expect_error(read_compressed(client, compressed_name(CODECS[0])), grpc.StatusCode.INVALID_ARGUMENT)
        assert "ZSTD is not supported" in message and "supported: IDENTITY, none" in message
