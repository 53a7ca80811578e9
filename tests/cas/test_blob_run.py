"""A run of small blobs (cas/blob_run.py), the wire form of a lease's inline files:
what is written is read back blob for blob, and a run that is not well formed is
read as nothing (the bot then reads those blobs from the CAS), never as wrong blobs."""

from __future__ import annotations

import hashlib

from cas.blob_run import RUN_HEADER, decode_run, encode_run
from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

BLOBS = {Digest.of(data): data for data in (b"a", b"some file\n", b"\x00\xff" * 300, b"x" * 70_000)}


def _run() -> bytes:
    run = encode_run([d.hash for d in BLOBS], list(BLOBS.values()))
    assert run is not None
    return run


def test_a_run_reads_back_as_the_blobs_it_was_written_from() -> None:
    run = _run()
    assert decode_run(run, re_pb2.DigestFunction.SHA256) == BLOBS
    assert len(run) == RUN_HEADER + sum(4 + 64 + len(data) for data in BLOBS.values())


def test_the_layout_is_the_documented_one() -> None:
    """docs/BOTS_PROTOCOL.md section 7: version, hash length, count, sizes, hashes, contents."""
    data = b"hello"
    digest = Digest.of(data)
    run = encode_run([digest.hash], [data])
    assert run == bytes((1, 64)) + (1).to_bytes(4, "little") + (5).to_bytes(4, "little") + digest.hash.encode() + data


def test_digests_take_the_leases_function() -> None:
    data = b"hashed by another function"
    named = hashlib.sha384(data).hexdigest()
    [digest] = decode_run(encode_run([named], [data]) or b"", re_pb2.DigestFunction.SHA384)
    assert digest == Digest(named, len(data), re_pb2.DigestFunction.SHA384)


def test_what_cannot_be_written_in_this_form_is_none() -> None:
    assert encode_run([], []) is None
    assert encode_run(["ab", "abc"], [b"1", b"2"]) is None  # one hash length per run
    assert encode_run(["é" * 64], [b"1"]) is None
    assert encode_run(["a" * 64], [b"1", b"2"]) is None


def test_a_malformed_run_is_read_as_nothing() -> None:
    run = _run()
    for broken in (
        b"",
        run[:5],
        bytes((2,)) + run[1:],  # another version
        run[:1] + bytes((0,)) + run[2:],  # no hash length
        run[:-1],  # contents cut short
        run + b"!",  # more contents than sizes
        run[:2] + (10**6).to_bytes(4, "little") + run[6:],  # more blobs than bytes
        run.replace(next(iter(BLOBS)).hash.encode(), b"\xff" * 64),  # a hash that is not ASCII
    ):
        assert decode_run(broken, re_pb2.DigestFunction.SHA256) == {}


def test_a_run_with_a_wrong_blob_reads_it_as_sent() -> None:
    """The reader does not check contents against hashes: where each blob is used it is
    verified (worker/cache_files.py), and a mismatch is read from the CAS."""
    digest = Digest.of(b"right")
    run = encode_run([digest.hash], [b"wrong"])
    assert decode_run(run or b"", re_pb2.DigestFunction.SHA256) == {digest: b"wrong"}
