"""Subresource Integrity (SRI) checksums, the form of the `checksum.sri` qualifier.

Bazel sends ``sha256-<base64>`` for an ``http_archive(sha256 = ...)``; the W3C
format allows several space-separated hash expressions, each optionally followed
by ``?options``. We accept sha256, sha384 and sha512 and treat several expressions
as alternatives: content that matches any one of them is accepted. An algorithm we
do not know is refused rather than ignored, because ignoring it would silently
skip the check the client asked for.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cas.errors import InvalidArgument

# SRI algorithm name -> digest size in bytes.
SRI_ALGORITHMS = {"sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True, order=True)
class Checksum:
    """One expected hash: an SRI algorithm name and the lowercase hex digest."""

    algorithm: str  # "sha256", "sha384" or "sha512"
    hex: str

    def to_sri(self) -> str:
        return f"{self.algorithm}-{base64.b64encode(bytes.fromhex(self.hex)).decode()}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_sri(value: str, field: str = "checksum.sri") -> tuple[Checksum, ...]:
    """Every hash expression in ``value``; INVALID_ARGUMENT naming the bad one."""
    checksums: list[Checksum] = []
    for expression in value.split():
        algorithm, dash, encoded = expression.partition("-")
        encoded = encoded.split("?", 1)[0]
        algorithm = algorithm.lower()
        if not dash or not encoded:
            raise InvalidArgument(f"{field}: {expression!r} is not an SRI hash expression (expected e.g. 'sha256-<base64>')")
        size = SRI_ALGORITHMS.get(algorithm)
        if size is None:
            supported = ", ".join(SRI_ALGORITHMS)
            raise InvalidArgument(f"{field}: hash algorithm {algorithm!r} is not supported (supported: {supported})")
        try:
            raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_" if "-" in encoded or "_" in encoded else None, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field}: {expression!r} does not hold valid base64") from None
        if len(raw) != size:
            raise InvalidArgument(f"{field}: {algorithm} hash in {expression!r} has {len(raw)} bytes, expected {size}")
        checksum = Checksum(algorithm, raw.hex())
        if checksum not in checksums:
            checksums.append(checksum)
    if not checksums:
        raise InvalidArgument(f"{field}: the value is empty (expected e.g. 'sha256-<base64>')")
    return tuple(checksums)


def matching(checksums: Iterable[Checksum], computed: Mapping[str, str]) -> Checksum | None:
    """The first expected checksum that ``computed`` (algorithm -> hex) satisfies."""
    for checksum in checksums:
        if computed.get(checksum.algorithm) == checksum.hex:
            return checksum
    return None


def describe_mismatch(checksums: Iterable[Checksum], computed: Mapping[str, str]) -> str:
    """Human-readable 'expected X, got Y' for every expected checksum."""
    parts = [f"expected {c.to_sri()}, got {Checksum(c.algorithm, computed[c.algorithm]).to_sri()}" for c in checksums if c.algorithm in computed]
    return "; ".join(parts) or "no checksum could be computed"
