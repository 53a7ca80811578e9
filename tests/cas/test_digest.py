"""Digest parsing: inference by length, BLAKE3 only when named, and messages that say what is wrong."""

from __future__ import annotations

import hashlib

import blake3
import pytest

from cas.digest import ALGORITHMS, BLAKE3, SHA256, Digest, algorithm_for, algorithm_named, digests_from_protos
from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

FN = re_pb2.DigestFunction
DATA = b"hello, remote execution"


@pytest.mark.parametrize(
    ("hasher", "function"),
    [(hashlib.md5, FN.MD5), (hashlib.sha1, FN.SHA1), (hashlib.sha256, FN.SHA256),
     (hashlib.sha384, FN.SHA384), (hashlib.sha512, FN.SHA512)],
)
def test_function_is_inferred_from_hash_length(hasher, function: int) -> None:  # type: ignore[no-untyped-def]
    digest = Digest.parse(hasher(DATA).hexdigest(), len(DATA))
    assert digest.function == function
    assert Digest.of(DATA, function) == digest


def test_a_64_digit_hash_is_sha256_unless_blake3_is_named() -> None:
    b3 = blake3.blake3(DATA).hexdigest()
    assert Digest.parse(b3, len(DATA)).function == FN.SHA256
    named = Digest.parse(b3, len(DATA), FN.BLAKE3)
    assert named.function == FN.BLAKE3
    assert named == Digest.of(DATA, FN.BLAKE3)
    assert named != Digest.parse(b3, len(DATA)), "the function is part of a blob's identity"
    assert named.key != Digest.parse(b3, len(DATA)).key


def test_from_proto_and_to_proto_round_trip() -> None:
    proto = re_pb2.Digest(hash=hashlib.sha256(DATA).hexdigest(), size_bytes=len(DATA))
    digest = Digest.from_proto(proto)
    assert digest.to_proto() == proto
    assert str(digest) == f"{proto.hash}/{proto.size_bytes}"
    assert digest.key == f"sha256/{proto.hash}-{proto.size_bytes}"


def test_empty_digests() -> None:
    assert Digest.empty().hash == hashlib.sha256(b"").hexdigest()
    assert Digest.empty(FN.BLAKE3).hash == blake3.blake3(b"").hexdigest()
    assert Digest.empty().is_empty and Digest.empty(FN.BLAKE3).is_empty
    assert not Digest.of(b"x").is_empty
    assert not Digest(Digest.empty().hash, 0, FN.BLAKE3).is_empty, "the SHA-256 empty hash is not BLAKE3's"


@pytest.mark.parametrize(
    ("hash_hex", "size", "function", "message"),
    [
        ("abc", 3, 0, r"'abc' has 3 characters, which matches no digest function"),
        ("A" * 64, 3, 0, r"is not 64 lowercase hex digits as SHA256 requires"),
        ("g" * 64, 3, 0, r"is not 64 lowercase hex digits"),
        ("a" * 40, 3, FN.SHA256, r"is not 64 lowercase hex digits as SHA256 requires"),
        ("a" * 64, -1, 0, r"has a negative size"),
        ("a" * 64, 3, 999, r"digest function 999 is not supported \(supported: SHA256, SHA1, MD5"),
        ("a" * 32, 3, FN.BLAKE3, r"is not 64 lowercase hex digits as BLAKE3 requires"),
    ],
)
def test_bad_digests_are_invalid_argument_with_a_clear_message(
    hash_hex: str, size: int, function: int, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Digest.parse(hash_hex, size, function)


def test_unsupported_named_function_is_named_in_the_message() -> None:
    unsupported = next(v for v in FN.Value.values() if v and v not in ALGORITHMS)
    with pytest.raises(InvalidArgument, match=f"digest function {FN.Value.Name(unsupported)} is not supported"):
        algorithm_for(unsupported)


def test_algorithm_names_are_resource_name_segments() -> None:
    assert algorithm_named("blake3") is BLAKE3
    assert algorithm_named("sha256") is SHA256
    assert algorithm_named("BLAKE3") is None
    assert algorithm_named("sha3") is None


def test_digests_from_protos_validates_every_item() -> None:
    good = re_pb2.Digest(hash=hashlib.sha256(DATA).hexdigest(), size_bytes=len(DATA))
    assert digests_from_protos([good, good], FN.SHA256) == [Digest.from_proto(good)] * 2
    assert digests_from_protos([good]) == [Digest.from_proto(good)]
    bad = re_pb2.Digest(hash="xyz" * 10, size_bytes=1)
    with pytest.raises(InvalidArgument, match="'xyzxyz"):
        digests_from_protos([good, bad], FN.SHA256)
    with pytest.raises(InvalidArgument, match="negative size"):
        digests_from_protos([re_pb2.Digest(hash=good.hash, size_bytes=-5)], FN.SHA256)
    with pytest.raises(InvalidArgument, match="matches no digest function"):
        digests_from_protos([bad])
