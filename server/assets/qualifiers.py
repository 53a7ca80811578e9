"""Qualifiers of a Fetch request, parsed and checked once at the edge.

Supported names (docs/ASSETS.md has the full story):

- ``checksum.sri``: expected content hashes (server/assets/sri.py).
- ``http_header:NAME``: a header sent to every URI.
- ``http_header_url:INDEX:NAME``: a header for ``uris[INDEX]`` only; it wins over
  ``http_header:NAME`` for that URI.
- ``bazel.auth_headers``: Bazel's per-URI credentials, a JSON object
  ``{uri: {header: value}}``.
- ``bazel.canonical_id``, ``resource_type``: part of the asset's identity.
- FetchDirectory only: ``directory`` (a subdirectory to return), ``vcs.commit``,
  ``vcs.branch`` (git).

A name we do not know is not refused here: pushed content may carry any qualifier,
so the fetcher first looks the request up in the index and refuses unknown names
only when it would have to go to the origin (see AssetFetcher).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.rpc import error_details_pb2

from cas.errors import InvalidArgument, invalid_field
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from server.assets.sri import Checksum, parse_sri

CHECKSUM_SRI = "checksum.sri"
CANONICAL_ID = "bazel.canonical_id"
AUTH_HEADERS = "bazel.auth_headers"
RESOURCE_TYPE = "resource_type"
DIRECTORY = "directory"
VCS_COMMIT = "vcs.commit"
VCS_BRANCH = "vcs.branch"
HTTP_HEADER_PREFIX = "http_header:"
HTTP_HEADER_URL_PREFIX = "http_header_url:"

GIT_RESOURCE_TYPE = "application/x-git"

# Qualifiers held in a plain string field of Qualifiers (the ones ``without`` can drop).
_SIMPLE_FIELDS = {
    CANONICAL_ID: "canonical_id", RESOURCE_TYPE: "resource_type", DIRECTORY: "directory",
    VCS_COMMIT: "vcs_commit", VCS_BRANCH: "vcs_branch",
}

BLOB_QUALIFIERS = frozenset({CHECKSUM_SRI, CANONICAL_ID, AUTH_HEADERS, RESOURCE_TYPE})
DIRECTORY_QUALIFIERS = BLOB_QUALIFIERS | {DIRECTORY, VCS_COMMIT, VCS_BRANCH}

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|[/.]$|\.lock$")


def _is_secret(name: str) -> bool:
    """Qualifiers that may carry credentials: never echoed back or logged."""
    return name == AUTH_HEADERS or name.startswith((HTTP_HEADER_PREFIX, HTTP_HEADER_URL_PREFIX))


@dataclass(frozen=True)
class Qualifiers:
    """The checked qualifiers of one request."""

    pairs: tuple[tuple[str, str], ...]  # every qualifier, sorted: the asset's identity
    checksums: tuple[Checksum, ...] = ()
    canonical_id: str = ""
    resource_type: str = ""
    directory: str = ""
    vcs_commit: str = ""
    vcs_branch: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    url_headers: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    auth_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.pairs}

    def unsupported(self, supported: frozenset[str]) -> list[str]:
        """Names outside ``supported`` (header qualifiers are always understood)."""
        return sorted(
            n for n in self.names if n not in supported and not n.startswith((HTTP_HEADER_PREFIX, HTTP_HEADER_URL_PREFIX))
        )

    def headers_for(self, index: int, uri: str) -> dict[str, str]:
        """Headers for ``uris[index]``: general, then Bazel's auth for that URI, then per-URL."""
        out: dict[str, str] = {}
        for layer in (self.headers, self.auth_headers.get(uri, {}), self.url_headers.get(index, {})):
            for name, value in layer.items():
                for existing in [k for k in out if k.lower() == name.lower()]:
                    del out[existing]
                out[name] = value
        return out

    def public(self) -> list[asset_pb2.Qualifier]:
        """The qualifiers safe to send back in a response (no credentials)."""
        return [asset_pb2.Qualifier(name=n, value=v) for n, v in self.pairs if not _is_secret(n)]

    @property
    def is_git(self) -> bool:
        return self.resource_type == GIT_RESOURCE_TYPE

    def without(self, *names: str) -> Qualifiers:
        """The same qualifiers minus ``names`` (FetchDirectory fetches its archive without
        ``directory`` and ``resource_type``, which describe the tree, not the file)."""
        cleared: dict[str, Any] = {_SIMPLE_FIELDS[name]: "" for name in names}
        return replace(self, pairs=tuple(p for p in self.pairs if p[0] not in names), **cleared)


def unsupported_error(names: Iterable[str], what: str) -> InvalidArgument:
    """INVALID_ARGUMENT with one BadRequest violation per unsupported qualifier, as the spec asks."""
    names = sorted(names)
    bad = error_details_pb2.BadRequest()
    for name in names:
        bad.field_violations.add(field="qualifiers.name", description=f'"{name}" not supported')
    listed = ", ".join(repr(n) for n in names)
    return InvalidArgument(f"{what}: unsupported qualifiers {listed} (see docs/ASSETS.md for the supported ones)", [bad])


def _header_value(name: str, value: str, field: str) -> str:
    if not _HEADER_NAME.match(name):
        raise invalid_field("qualifiers.name", f"{field}: {name!r} is not a valid HTTP header name")
    if any(c in value for c in "\r\n\x00"):
        raise invalid_field("qualifiers.value", f"{field}: the header value holds a line break or NUL")
    return value


def _auth_headers(value: str) -> dict[str, dict[str, str]]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise invalid_field("qualifiers.value", f"{AUTH_HEADERS}: not valid JSON ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise invalid_field("qualifiers.value", f"{AUTH_HEADERS}: expected a JSON object of {{uri: {{header: value}}}}")
    out: dict[str, dict[str, str]] = {}
    for uri, headers in parsed.items():
        if not isinstance(headers, dict):
            raise invalid_field("qualifiers.value", f"{AUTH_HEADERS}: the headers for a URI must be an object")
        entry: dict[str, str] = {}
        for name, header_value in headers.items():
            # Bazel >= 7 sends a list of values per header; older versions a string.
            values = header_value if isinstance(header_value, list) else [header_value]
            if not all(isinstance(v, str) for v in values):
                raise invalid_field("qualifiers.value", f"{AUTH_HEADERS}: header values must be strings")
            entry[name] = _header_value(name, ", ".join(values), AUTH_HEADERS)
        out[str(uri)] = entry
    return out


def _relative_path(value: str) -> str:
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if value.startswith("/") or ".." in parts:
        raise invalid_field("qualifiers.value", f"{DIRECTORY}: {value!r} must be a relative path inside the tree")
    return "/".join(parts)


def parse_qualifiers(protos: Iterable[asset_pb2.Qualifier], uri_count: int) -> Qualifiers:
    """Check syntax and uniqueness; INVALID_ARGUMENT with a BadRequest naming the fault."""
    pairs: dict[str, str] = {}
    for q in protos:
        if not q.name:
            raise invalid_field("qualifiers.name", "a qualifier has an empty name")
        if q.name in pairs:
            raise invalid_field("qualifiers.name", f"qualifier {q.name!r} is given twice (names must be unique)")
        pairs[q.name] = q.value
    values: dict[str, object] = {}
    headers: dict[str, str] = {}
    url_headers: dict[int, dict[str, str]] = {}
    for name, value in pairs.items():
        if name == CHECKSUM_SRI:
            try:
                values["checksums"] = parse_sri(value)
            except InvalidArgument as err:
                raise invalid_field("qualifiers.value", err.message) from None
        elif name == CANONICAL_ID:
            values["canonical_id"] = value
        elif name == RESOURCE_TYPE:
            values["resource_type"] = value.strip().lower()
        elif name == DIRECTORY:
            values["directory"] = _relative_path(value)
        elif name == VCS_COMMIT:
            if not _COMMIT.match(value):
                raise invalid_field("qualifiers.value", f"{VCS_COMMIT}: {value!r} is not a full lowercase hex commit id")
            values["vcs_commit"] = value
        elif name == VCS_BRANCH:
            if not value or _BRANCH_FORBIDDEN.search(value):
                raise invalid_field("qualifiers.value", f"{VCS_BRANCH}: {value!r} is not a valid branch name")
            values["vcs_branch"] = value
        elif name == AUTH_HEADERS:
            values["auth_headers"] = _auth_headers(value)
        elif name.startswith(HTTP_HEADER_URL_PREFIX):
            index_text, colon, header = name[len(HTTP_HEADER_URL_PREFIX) :].partition(":")
            if not colon or not index_text.isdigit():
                raise invalid_field("qualifiers.name", f"{name!r}: expected '{HTTP_HEADER_URL_PREFIX}INDEX:NAME'")
            index = int(index_text)
            if index >= uri_count:
                raise invalid_field("qualifiers.name", f"{name!r}: URI index {index} is out of range (the request has {uri_count} URIs)")
            url_headers.setdefault(index, {})[header] = _header_value(header, value, name)
        elif name.startswith(HTTP_HEADER_PREFIX):
            header = name[len(HTTP_HEADER_PREFIX) :]
            headers[header] = _header_value(header, value, name)
    return Qualifiers(
        pairs=tuple(sorted(pairs.items())),
        headers=headers,
        url_headers=url_headers,
        **values,  # type: ignore[arg-type]
    )
