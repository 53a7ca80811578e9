"""server/blob_batches.py without gRPC: the cap on a batch, errors that stay with their entry.

tests/server/test_cas_service.py drives the same rules through the real service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from cas.compression.codecs import DeflateCodec, ZstdCodec
from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.errors import InvalidArgument, ReapiError, ResourceExhausted
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.blob_batches import BlobBatches, digests_each

BLOBS = [b"alpha", b"beta", b"gamma"]
DIGESTS = [Digest.of(b) for b in BLOBS]
PROTOS = [d.to_proto() for d in DIGESTS]
MALFORMED = re_pb2.Digest(hash="not-hex", size_bytes=3)
IDENTITY, BROTLI = re_pb2.Compressor.IDENTITY, re_pb2.Compressor.BROTLI


def new_store() -> tuple[MemoryStore, VerifyingStore]:
    inner = MemoryStore(1 << 20)
    return inner, VerifyingStore(inner)


async def test_a_clean_batch_is_stored_with_no_errors() -> None:
    inner, cas = new_store()
    digests, errors = await BlobBatches(1 << 20).update(cas, PROTOS, 0, BLOBS, [IDENTITY] * 3)
    assert digests == DIGESTS and errors == {}
    assert await inner.get_many(DIGESTS) == dict(zip(DIGESTS, BLOBS))


async def test_malformed_digests_compressors_and_bad_data_fail_only_their_entry() -> None:
    inner, cas = new_store()
    protos = [PROTOS[0], MALFORMED, PROTOS[1], PROTOS[2]]
    datas = [BLOBS[0], b"abc", BLOBS[1], b"not gamma"]
    digests, errors = await BlobBatches(1 << 20).update(cas, protos, 0, datas, [IDENTITY, IDENTITY, BROTLI, IDENTITY])
    assert digests == [DIGESTS[0], None, DIGESTS[1], DIGESTS[2]]
    assert sorted(errors) == [1, 2, 3] and all(isinstance(e, InvalidArgument) for e in errors.values())
    assert "compressor BROTLI is not supported" in str(errors[2])
    assert "does not match" in str(errors[3])
    assert set(await inner.get_many(DIGESTS)) == {DIGESTS[0]}


async def test_a_store_failure_is_reported_for_every_entry_of_that_blob() -> None:
    class FailingBeta(MemoryStore):
        async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
            await super().put_many({d: b for d, b in blobs.items() if d != DIGESTS[1]})
            return {DIGESTS[1]: ResourceExhausted("no room for beta")}

    protos = [PROTOS[1], PROTOS[0], PROTOS[1]]
    _, errors = await BlobBatches(1 << 20).update(FailingBeta(1 << 20), protos, 0, [BLOBS[1], BLOBS[0], BLOBS[1]], [0] * 3)
    assert sorted(errors) == [0, 2] and "no room for beta" in str(errors[0])


async def test_batches_over_the_cap_are_refused_whole_naming_it() -> None:
    inner, cas = new_store()
    batches = BlobBatches(8)
    with pytest.raises(InvalidArgument, match="BatchUpdateBlobs asks for 9 bytes .* limit of 8 bytes"):
        await batches.update(cas, PROTOS[:2], 0, BLOBS[:2], [IDENTITY] * 2)
    assert len(inner) == 0
    await cas.put_many(dict(zip(DIGESTS, BLOBS)))
    with pytest.raises(InvalidArgument, match="BatchReadBlobs asks for 9 bytes"):
        await batches.read(cas, PROTOS[:2], 0)
    # Reads count each distinct blob once.
    digests, refused, found = await batches.read(cas, [PROTOS[0], PROTOS[0], MALFORMED], 0)
    assert digests == [DIGESTS[0], DIGESTS[0], None] and list(refused) == [2] and found == {DIGESTS[0]: BLOBS[0]}


async def test_absent_blobs_are_simply_not_found() -> None:
    _, cas = new_store()
    await cas.put_bytes(DIGESTS[0], BLOBS[0])
    digests, refused, found = await BlobBatches(1 << 20).read(cas, PROTOS, 0)
    assert digests == DIGESTS and refused == {} and found == {DIGESTS[0]: BLOBS[0]}


def test_an_unsupported_digest_function_fails_the_whole_batch() -> None:
    with pytest.raises(InvalidArgument):
        digests_each(PROTOS, 12345)
    assert digests_each(PROTOS, re_pb2.DigestFunction.SHA256) == (DIGESTS, {})


ZSTD, DEFLATE = re_pb2.Compressor.ZSTD, re_pb2.Compressor.DEFLATE
TEXT = b"".join(b"line %d of a build log, with warnings and object names\n" % i for i in range(2000))
TEXT_DIGEST = Digest.of(TEXT)


async def test_compressed_entries_are_decompressed_checked_and_stored() -> None:
    inner, cas = new_store()
    zstd, deflate = ZstdCodec(), DeflateCodec()
    protos = [TEXT_DIGEST.to_proto(), PROTOS[0], PROTOS[1], PROTOS[2], Digest.of(TEXT[:999]).to_proto()]
    datas = [zstd.compress(TEXT), deflate.compress(BLOBS[0]), b"not zstd at all", zstd.compress(BLOBS[1]),
             zstd.compress(TEXT[:1000])]
    digests, errors = await BlobBatches(1 << 20).update(cas, protos, 0, datas, [ZSTD, DEFLATE, ZSTD, ZSTD, ZSTD])
    assert sorted(errors) == [2, 3, 4] and all(isinstance(e, InvalidArgument) for e in errors.values())
    assert "zstd stream is corrupt" in str(errors[2]) and DIGESTS[1].hash in str(errors[2])
    assert "does not match" in str(errors[3])  # decodes fine, to another blob
    assert "decompresses to more than the 999 bytes" in str(errors[4])
    assert await inner.get_many([TEXT_DIGEST, DIGESTS[0], DIGESTS[1], DIGESTS[2]]) == {TEXT_DIGEST: TEXT, DIGESTS[0]: BLOBS[0]}


@pytest.mark.parametrize("good_first", [True, False], ids=["good-then-bad", "bad-then-good"])
async def test_a_digest_sent_twice_gets_an_honest_status_per_entry(good_first: bool) -> None:
    inner, cas = new_store()
    entries = [BLOBS[0], b"not alpha"] if good_first else [b"not alpha", BLOBS[0]]
    protos = [PROTOS[0], PROTOS[0], PROTOS[1]]
    digests, errors = await BlobBatches(1 << 20).update(cas, protos, 0, entries + [BLOBS[1]], [IDENTITY] * 3)
    bad = 1 if good_first else 0
    assert list(errors) == [bad] and "does not match" in str(errors[bad])
    assert digests == [DIGESTS[0], DIGESTS[0], DIGESTS[1]]
    assert await inner.get_many(DIGESTS[:2]) == {DIGESTS[0]: BLOBS[0], DIGESTS[1]: BLOBS[1]}


async def test_a_digest_sent_twice_with_the_same_data_or_both_bad() -> None:
    inner, cas = new_store()
    _, errors = await BlobBatches(1 << 20).update(cas, [PROTOS[0]] * 2, 0, [BLOBS[0]] * 2, [IDENTITY] * 2)
    assert errors == {} and await inner.get_many([DIGESTS[0]]) == {DIGESTS[0]: BLOBS[0]}
    # Twice, compressed once and plain once: the same blob either way.
    _, errors = await BlobBatches(1 << 20).update(
        cas, [TEXT_DIGEST.to_proto()] * 2, 0, [ZstdCodec().compress(TEXT), TEXT], [ZSTD, IDENTITY]
    )
    assert errors == {}
    _, errors = await BlobBatches(1 << 20).update(cas, [PROTOS[2]] * 2, 0, [b"bad", b"also bad"], [IDENTITY] * 2)
    assert sorted(errors) == [0, 1] and DIGESTS[2] not in await inner.get_many([DIGESTS[2]])


async def test_reads_are_compressed_with_an_acceptable_compressor_when_it_pays() -> None:
    _, cas = new_store()
    noise = os.urandom(50_000)  # does not compress: sent as it is
    await cas.put_many({TEXT_DIGEST: TEXT, DIGESTS[0]: BLOBS[0], Digest.of(noise): noise})
    batches = BlobBatches(1 << 20)
    found = (await batches.read(cas, [TEXT_DIGEST.to_proto(), PROTOS[0], Digest.of(noise).to_proto()], 0)).found
    assert await batches.compress_found(dict(found), [IDENTITY]) == {}  # identity only: as stored
    assert await batches.compress_found(dict(found), [re_pb2.Compressor.BROTLI]) == {}  # nothing we serve
    compressors = await batches.compress_found(found, [DEFLATE, ZSTD])
    assert compressors == {TEXT_DIGEST: ZSTD}  # zstd preferred; tiny and incompressible blobs stay plain
    assert ZstdCodec().decompress(found[TEXT_DIGEST], len(TEXT)) == TEXT
    assert found[DIGESTS[0]] == BLOBS[0] and found[Digest.of(noise)] == noise
    fresh = (await batches.read(cas, [TEXT_DIGEST.to_proto()], 0)).found
    assert (await batches.compress_found(fresh, [DEFLATE])) == {TEXT_DIGEST: DEFLATE}
    assert DeflateCodec().decompress(fresh[TEXT_DIGEST], len(TEXT)) == TEXT
