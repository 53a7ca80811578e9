"""server/blob_batches.py without gRPC: the cap on a batch, errors that stay with their entry.

tests/server/test_cas_service.py drives the same rules through the real service.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

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
IDENTITY, ZSTD = re_pb2.Compressor.IDENTITY, re_pb2.Compressor.ZSTD


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
    digests, errors = await BlobBatches(1 << 20).update(cas, protos, 0, datas, [IDENTITY, IDENTITY, ZSTD, IDENTITY])
    assert digests == [DIGESTS[0], None, DIGESTS[1], DIGESTS[2]]
    assert sorted(errors) == [1, 2, 3] and all(isinstance(e, InvalidArgument) for e in errors.values())
    assert "compressor ZSTD is not supported" in str(errors[2])
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
