"""The ByteStream resource-name grammar (server/resource_names.py)."""

from __future__ import annotations

import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.resource_names import download_name, parse_download, parse_upload, upload_name

SHA = Digest.of(b"hello")
B3 = Digest.of(b"hello", re_pb2.DigestFunction.BLAKE3)
MD5 = Digest.of(b"hello", re_pb2.DigestFunction.MD5)
UUID = "3f2c1a9e-5b7d-4e61-9a0b-2c3d4e5f6a7b"


@pytest.mark.parametrize("instance", ["", "main", "a/b/c", "team/linux-x86"])
def test_download_names_round_trip_with_any_instance(instance: str) -> None:
    name = download_name(instance, SHA)
    assert not name.startswith("/")
    parsed = parse_download(name)
    assert (parsed.instance_name, parsed.digest) == (instance, SHA)


def test_download_name_of_an_empty_instance_has_no_leading_slash() -> None:
    assert download_name("", SHA) == f"blobs/{SHA.hash}/5"


def test_inferable_functions_omit_the_segment_and_blake3_names_it() -> None:
    assert download_name("i", MD5) == f"i/blobs/{MD5.hash}/5"
    assert download_name("i", B3) == f"i/blobs/blake3/{B3.hash}/5"
    assert parse_download(f"i/blobs/blake3/{B3.hash}/5").digest == B3
    assert parse_download(f"i/blobs/{MD5.hash}/5").digest == MD5


def test_a_same_length_hash_without_a_segment_is_sha256_not_blake3() -> None:
    assert parse_download(f"blobs/{B3.hash}/5").digest.function == re_pb2.DigestFunction.SHA256


def test_an_explicit_sha256_segment_is_accepted() -> None:
    assert parse_download(f"blobs/sha256/{SHA.hash}/5").digest == SHA


def test_upload_names_with_metadata_and_slashed_instances() -> None:
    name = f"a/b/uploads/{UUID}/blobs/{SHA.hash}/5/some/metadata"
    parsed = parse_upload(name)
    assert parsed.instance_name == "a/b"
    assert parsed.upload_id == UUID
    assert parsed.digest == SHA
    assert parsed.metadata == "some/metadata"
    assert parse_upload(upload_name("a/b", UUID, B3)).digest == B3


def test_identity_compressed_blobs_are_plain_blobs() -> None:
    assert parse_download(f"i/compressed-blobs/identity/{SHA.hash}/5").digest == SHA
    assert parse_upload(f"uploads/{UUID}/compressed-blobs/identity/{SHA.hash}/5").digest == SHA


def test_compressed_names_carry_their_compressor_and_unknown_ones_are_refused() -> None:
    # Whether a compressor is served is the service's question (tests/server/test_compressed_bytestream.py).
    download = parse_download(f"i/compressed-blobs/zstd/{SHA.hash}/5")
    assert (download.instance_name, download.digest, download.compressor) == ("i", SHA, re_pb2.Compressor.ZSTD)
    upload = parse_upload(f"a/b/uploads/{UUID}/compressed-blobs/deflate/blake3/{B3.hash}/5/meta")
    assert (upload.instance_name, upload.digest, upload.compressor) == ("a/b", B3, re_pb2.Compressor.DEFLATE)
    assert (upload.upload_id, upload.metadata) == (UUID, "meta")
    assert parse_download(f"i/blobs/{SHA.hash}/5").compressor == re_pb2.Compressor.IDENTITY
    assert download_name("i", B3, "zstd") == f"i/compressed-blobs/zstd/blake3/{B3.hash}/5"
    assert parse_upload(upload_name("", UUID, SHA, compressor="zstd")).compressor == re_pb2.Compressor.ZSTD
    with pytest.raises(InvalidArgument, match="'lz4' is not a compressor"):
        parse_upload(f"uploads/{UUID}/compressed-blobs/lz4/{SHA.hash}/5")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"i/blobs/{SHA.hash}", "needs a hash and a size"),
        (f"i/blobs/{SHA.hash}/five", "size 'five' is not a non-negative decimal number"),
        (f"i/blobs/{SHA.hash}/-5", "is not a non-negative decimal number"),
        ("i/blobs/abc123/5", "has 6 characters"),
        (f"i/blobs/{SHA.hash.upper()}/5", "lowercase hex"),
        (f"i/blobs/murmur3/{SHA.hash}/5", "digest function 'murmur3' is not supported"),
        (f"i/blobs/rot13/{SHA.hash}/5", "'rot13' is not a digest function"),
        (f"i/things/{SHA.hash}/5", "no 'blobs' or 'compressed-blobs' segment"),
        (f"i/blobs/{SHA.hash}/5/extra", "unexpected segments after the size"),
        (f"i/uploads/{UUID}/blobs/{SHA.hash}/5", "unexpected 'uploads' segment"),
        (f"i/blobs/blake3/{SHA.hash[:10]}/5", "is not 64 lowercase hex digits as BLAKE3 requires"),
        ("", "no 'blobs' or 'compressed-blobs' segment"),
    ],
)
def test_malformed_download_names_name_the_problem(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        parse_download(name)
    assert repr(name) in info.value.message or name == ""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"i/blobs/{SHA.hash}/5", "unexpected 'blobs' segment"),
        (f"i/uploads//blobs/{SHA.hash}/5", "no upload id"),
        ("i/uploads", "no upload id"),
        (f"i/uploads/{UUID}/{SHA.hash}/5", "expected 'blobs' after the upload id"),
        (f"i/uploads/{UUID}/blobs/{SHA.hash}/x", "is not a non-negative decimal number"),
    ],
)
def test_malformed_upload_names_name_the_problem(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_upload(name)
