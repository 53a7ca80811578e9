"""checksum.sri parsing and the qualifier rules, checked without a server."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from google.rpc import error_details_pb2

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from server.assets.qualifiers import BLOB_QUALIFIERS, DIRECTORY_QUALIFIERS, Qualifiers, parse_qualifiers, unsupported_error
from server.assets.sri import Checksum, matching, parse_sri


def sri(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def qualifiers(*pairs: tuple[str, str], uris: int = 1) -> Qualifiers:
    return parse_qualifiers([asset_pb2.Qualifier(name=n, value=v) for n, v in pairs], uri_count=uris)


def test_sri_parses_every_supported_algorithm_and_options() -> None:
    data = b"hello"
    parsed = parse_sri(f"{sri('sha256', data)} {sri('sha384', data)}?opt {sri('sha512', data)}")
    assert [c.algorithm for c in parsed] == ["sha256", "sha384", "sha512"]
    assert parsed[0].hex == hashlib.sha256(data).hexdigest()
    assert parsed[0].to_sri() == sri("sha256", data)


def test_any_listed_checksum_may_match() -> None:
    good, bad = sri("sha512", b"x"), sri("sha256", b"other")
    parsed = parse_sri(f"{bad} {good}")
    computed = {"sha256": hashlib.sha256(b"x").hexdigest(), "sha512": hashlib.sha512(b"x").hexdigest()}
    assert matching(parsed, computed) == Checksum("sha512", hashlib.sha512(b"x").hexdigest())
    assert matching(parse_sri(bad), computed) is None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("md5-XUFAKrxLKna5cZ2REBfFkg==", "'md5' is not supported"),
        ("sha256-!!!!", "valid base64"),
        ("sha256-" + base64.b64encode(b"short").decode(), "has 5 bytes, expected 32"),
        ("sha256", "not an SRI hash expression"),
        ("   ", "empty"),
    ],
)
def test_bad_sri_is_refused_with_the_reason(value: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        parse_sri(value)


def test_headers_url_specific_ones_win_for_their_uri() -> None:
    parsed = qualifiers(
        ("http_header:Authorization", "Bearer general"),
        ("http_header:X-Other", "kept"),
        ("http_header_url:1:authorization", "Bearer for-second"),
        uris=2,
    )
    assert parsed.headers_for(0, "a") == {"Authorization": "Bearer general", "X-Other": "kept"}
    assert parsed.headers_for(1, "b") == {"X-Other": "kept", "authorization": "Bearer for-second"}


def test_bazel_auth_headers_apply_to_their_uri_only() -> None:
    value = json.dumps({"https://a.example/x.tgz": {"Authorization": "Basic abc"}})
    parsed = qualifiers(("bazel.auth_headers", value), uris=2)
    assert parsed.headers_for(0, "https://a.example/x.tgz") == {"Authorization": "Basic abc"}
    assert parsed.headers_for(1, "https://mirror.example/x.tgz") == {}


def test_credentials_are_not_echoed_back() -> None:
    parsed = qualifiers(("http_header:Authorization", "secret"), ("bazel.canonical_id", "id"), ("bazel.auth_headers", "{}"))
    assert [(p.name, p.value) for p in parsed.public()] == [("bazel.canonical_id", "id")]


@pytest.mark.parametrize(
    ("pairs", "complaint"),
    [
        ((("checksum.sri", "sha1-abc"),), "sha1"),
        ((("http_header_url:3:X", "v"),), "out of range"),
        ((("http_header_url:x:X", "v"),), "INDEX:NAME"),
        ((("http_header:Bad Name", "v"),), "not a valid HTTP header name"),
        ((("http_header:X", "a\r\nInjected: 1"),), "line break"),
        ((("vcs.commit", "abc"),), "full lowercase hex commit"),
        ((("vcs.branch", "-upload-pack=evil"),), "not a valid branch"),
        ((("directory", "../up"),), "relative path inside"),
        ((("bazel.auth_headers", "[1]"),), "JSON object"),
        ((("", "v"),), "empty name"),
    ],
)
def test_bad_qualifiers_are_invalid_argument_with_a_field_violation(pairs: tuple[tuple[str, str], ...], complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint) as caught:
        qualifiers(*pairs)
    assert any(isinstance(d, error_details_pb2.BadRequest) for d in caught.value.details)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_qualifiers([asset_pb2.Qualifier(name="resource_type", value="a")] * 2, uri_count=1)


def test_unsupported_names_are_listed_per_the_spec() -> None:
    parsed = qualifiers(("resource_type", "x"), ("mystery", "1"), ("directory", "a"))
    assert parsed.unsupported(BLOB_QUALIFIERS) == ["directory", "mystery"]
    assert parsed.unsupported(DIRECTORY_QUALIFIERS) == ["mystery"]
    err = unsupported_error(["mystery"], "FetchBlob")
    bad = err.details[0]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("qualifiers.name", '"mystery" not supported')]


def test_identity_is_order_independent() -> None:
    a = qualifiers(("resource_type", "x"), ("bazel.canonical_id", "c"))
    b = qualifiers(("bazel.canonical_id", "c"), ("resource_type", "x"))
    assert a.pairs == b.pairs
