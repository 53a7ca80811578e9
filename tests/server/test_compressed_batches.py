"""Batch calls over real gRPC with compressors, and with one digest sent twice."""

from __future__ import annotations

from google.rpc import code_pb2

from cas.compression.codecs import DeflateCodec, ZstdCodec
from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.server.client import StorageClient

Req = re_pb2.BatchUpdateBlobsRequest.Request
ZSTD, DEFLATE, IDENTITY = re_pb2.Compressor.ZSTD, re_pb2.Compressor.DEFLATE, re_pb2.Compressor.IDENTITY
TEXT = b"".join(b"bazel-out/k8-fastbuild/bin/lib%d.a: ar archive, %d members\n" % (i, i % 17) for i in range(3000))


async def test_batch_updates_take_each_served_compressor(client: StorageClient, cas_memory: MemoryStore) -> None:
    parts = [TEXT[:50_000], TEXT[50_000:], b"tiny"]
    request = re_pb2.BatchUpdateBlobsRequest(requests=[
        Req(digest=Digest.of(parts[0]).to_proto(), data=ZstdCodec().compress(parts[0]), compressor=ZSTD),
        Req(digest=Digest.of(parts[1]).to_proto(), data=DeflateCodec().compress(parts[1]), compressor=DEFLATE),
        Req(digest=Digest.of(parts[2]).to_proto(), data=parts[2]),
        Req(digest=Digest.of(b"lost").to_proto(), data=ZstdCodec().compress(b"lost")[:-2], compressor=ZSTD),
    ])
    response = await client.cas.BatchUpdateBlobs(request)
    assert [r.status.code for r in response.responses] == [code_pb2.OK] * 3 + [code_pb2.INVALID_ARGUMENT]
    assert "zstd stream ends in the middle of a frame" in response.responses[3].status.message
    for part in parts:
        assert await client.read(Digest.of(part)) == part
    assert len(cas_memory) == 3


async def test_batch_reads_answer_in_an_acceptable_compressor_when_it_pays(client: StorageClient) -> None:
    text, tiny = await client.upload(TEXT), await client.upload(b"tiny")
    absent = Digest.of(b"absent")
    request = re_pb2.BatchReadBlobsRequest(
        digests=[text.to_proto(), tiny.to_proto(), absent.to_proto()], acceptable_compressors=[ZSTD, DEFLATE]
    )
    responses = (await client.cas.BatchReadBlobs(request)).responses
    assert [r.status.code for r in responses] == [code_pb2.OK, code_pb2.OK, code_pb2.NOT_FOUND]
    assert responses[0].compressor == ZSTD and len(responses[0].data) < len(TEXT) // 4
    assert ZstdCodec().decompress(responses[0].data, len(TEXT)) == TEXT
    assert (responses[1].compressor, responses[1].data) == (IDENTITY, b"tiny")
    # Without acceptable compressors (as Buck2 asks: IDENTITY only) every blob comes plain.
    plain = await client.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[text.to_proto()],
                                                                         acceptable_compressors=[IDENTITY]))
    assert (plain.responses[0].compressor, plain.responses[0].data) == (IDENTITY, TEXT)
    only_deflate = await client.cas.BatchReadBlobs(
        re_pb2.BatchReadBlobsRequest(digests=[text.to_proto()], acceptable_compressors=[DEFLATE])
    )
    assert only_deflate.responses[0].compressor == DEFLATE
    assert DeflateCodec().decompress(only_deflate.responses[0].data, len(TEXT)) == TEXT


async def test_one_digest_twice_good_then_bad_and_bad_then_good(client: StorageClient, cas_memory: MemoryStore) -> None:
    for good_first, data in ((True, b"first blob"), (False, b"second blob")):
        digest = Digest.of(data).to_proto()
        entries = [Req(digest=digest, data=data), Req(digest=digest, data=b"tampered!!")]
        if not good_first:
            entries.reverse()
        response = await client.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=entries))
        codes = [r.status.code for r in response.responses]
        assert codes == ([code_pb2.OK, code_pb2.INVALID_ARGUMENT] if good_first else [code_pb2.INVALID_ARGUMENT, code_pb2.OK])
        assert [r.digest for r in response.responses] == [digest, digest]
        assert await client.read(Digest.of(data)) == data
    assert len(cas_memory) == 2
