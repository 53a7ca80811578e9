"""Digests and the hash functions behind them.

A ``Digest`` is validated once, at the edge (``Digest.from_proto``), and trusted
everywhere after. It carries its digest function, because SHA-256 and BLAKE3 hashes
have the same length: the function is part of a blob's identity.

When a request leaves ``digest_function`` unset, REv2 says to infer it from the hash
length (SHA-256, SHA-1, MD5, SHA-384, SHA-512). BLAKE3 is used only when named.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import NamedTuple, Protocol

import blake3

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

DigestFunctionValue = int  # a re_pb2.DigestFunction.Value


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class HashAlgorithm:
    """One supported digest function."""

    function: DigestFunctionValue
    name: str  # lowercase, as in resource names: "sha256", "blake3"
    hex_length: int
    new: Callable[[], Hasher]
    inferable: bool  # may be chosen from the hash length alone

    @property
    def hash_pattern(self) -> re.Pattern[str]:
        return _PATTERNS[self.hex_length]


def _blake3() -> Hasher:
    # AUTO lets large updates use several threads; small ones stay single-threaded.
    return blake3.blake3(max_threads=blake3.blake3.AUTO)  # type: ignore[return-value]


ALGORITHMS: dict[DigestFunctionValue, HashAlgorithm] = {
    a.function: a
    for a in (
        HashAlgorithm(re_pb2.DigestFunction.SHA256, "sha256", 64, hashlib.sha256, True),
        HashAlgorithm(re_pb2.DigestFunction.SHA1, "sha1", 40, hashlib.sha1, True),
        HashAlgorithm(re_pb2.DigestFunction.MD5, "md5", 32, hashlib.md5, True),
        HashAlgorithm(re_pb2.DigestFunction.SHA384, "sha384", 96, hashlib.sha384, True),
        HashAlgorithm(re_pb2.DigestFunction.SHA512, "sha512", 128, hashlib.sha512, True),
        HashAlgorithm(re_pb2.DigestFunction.BLAKE3, "blake3", 64, _blake3, False),
    )
}
_PATTERNS = {a.hex_length: re.compile(f"[0-9a-f]{{{a.hex_length}}}") for a in ALGORITHMS.values()}
_BY_LENGTH = {a.hex_length: a for a in ALGORITHMS.values() if a.inferable}
_BY_NAME = {a.name: a for a in ALGORITHMS.values()}

SHA256 = ALGORITHMS[re_pb2.DigestFunction.SHA256]
BLAKE3 = ALGORITHMS[re_pb2.DigestFunction.BLAKE3]


def algorithm_for(function: DigestFunctionValue) -> HashAlgorithm:
    """The algorithm for an explicitly named function; INVALID_ARGUMENT if unsupported."""
    try:
        return ALGORITHMS[function]
    except KeyError:
        name = re_pb2.DigestFunction.Value.Name(function) if function in re_pb2.DigestFunction.Value.values() else str(function)
        supported = ", ".join(a.name.upper() for a in ALGORITHMS.values())
        raise InvalidArgument(f"digest function {name} is not supported (supported: {supported})") from None


def algorithm_named(name: str) -> HashAlgorithm | None:
    """The algorithm for a lowercase resource-name segment such as "blake3"."""
    return _BY_NAME.get(name)


def infer_algorithm(hash_hex: str) -> HashAlgorithm:
    """Pick the function from the hash length, as REv2 asks when none is given."""
    algorithm = _BY_LENGTH.get(len(hash_hex))
    if algorithm is None:
        raise InvalidArgument(
            f"digest hash {hash_hex!r} has {len(hash_hex)} characters, which matches no digest function "
            "(name the digest function, or send 32, 40, 64, 96 or 128 hex digits)"
        )
    return algorithm


class Digest(NamedTuple):
    """A validated content address. Construct with ``parse``/``from_proto``/``of``."""

    hash: str
    size_bytes: int
    function: DigestFunctionValue = re_pb2.DigestFunction.SHA256

    @classmethod
    def parse(cls, hash_hex: str, size_bytes: int, function: DigestFunctionValue = 0) -> Digest:
        """Validate raw parts; ``function`` 0 (UNKNOWN) means infer from the hash length."""
        algorithm = algorithm_for(function) if function else infer_algorithm(hash_hex)
        if len(hash_hex) != algorithm.hex_length or not algorithm.hash_pattern.fullmatch(hash_hex):
            raise InvalidArgument(
                f"digest hash {hash_hex!r} is not {algorithm.hex_length} lowercase hex digits "
                f"as {algorithm.name.upper()} requires"
            )
        if size_bytes < 0:
            raise InvalidArgument(f"digest {hash_hex}/{size_bytes} has a negative size")
        return cls(hash_hex, size_bytes, algorithm.function)

    @classmethod
    def from_proto(cls, proto: re_pb2.Digest, function: DigestFunctionValue = 0) -> Digest:
        return cls.parse(proto.hash, proto.size_bytes, function)

    @classmethod
    def of(cls, data: bytes | memoryview, function: DigestFunctionValue = re_pb2.DigestFunction.SHA256) -> Digest:
        """The digest of in-memory content."""
        hasher = ALGORITHMS[function].new()
        hasher.update(data)
        return cls(hasher.hexdigest(), len(data), function)

    @classmethod
    def empty(cls, function: DigestFunctionValue = re_pb2.DigestFunction.SHA256) -> Digest:
        return _EMPTY[function]

    @property
    def algorithm(self) -> HashAlgorithm:
        return ALGORITHMS[self.function]

    @property
    def is_empty(self) -> bool:
        return self.size_bytes == 0 and self == _EMPTY[self.function]

    def to_proto(self) -> re_pb2.Digest:
        return re_pb2.Digest(hash=self.hash, size_bytes=self.size_bytes)

    @property
    def key(self) -> str:
        """A stable storage key that keeps functions apart: ``sha256/<hash>-<size>``."""
        return f"{ALGORITHMS[self.function].name}/{self.hash}-{self.size_bytes}"

    def __str__(self) -> str:
        return f"{self.hash}/{self.size_bytes}"


_EMPTY = {f: Digest(a.new().hexdigest(), 0, f) for f, a in ALGORITHMS.items()}
# The empty blob of every function: ``EMPTY_DIGESTS.isdisjoint(many)`` checks a whole request in C.
EMPTY_DIGESTS = frozenset(_EMPTY.values())


_HASH_OF = attrgetter("hash")
_SIZE_OF = attrgetter("size_bytes")
_HEX_DIGITS = b"0123456789abcdef"
# Builds a Digest from a (hash, size, function) tuple without running Python code.
_make_digest = partial(tuple.__new__, Digest)


def _all_lowercase_hex(hashes: list[str], length: int) -> bool:
    """Whether every hash is ``length`` lowercase hex digits, checked in a few C calls."""
    if set(map(len, hashes)) != {length}:
        return False
    try:
        joined = "".join(hashes).encode("ascii")
    except UnicodeEncodeError:
        return False
    return not joined.translate(None, _HEX_DIGITS)


def digests_from_protos(protos: Iterable[re_pb2.Digest], function: DigestFunctionValue = 0) -> list[Digest]:
    """Validate many digests; the fast path for FindMissingBlobs-sized requests.

    Per-digest Python code is what makes 10,000 digests slow, so the common case
    (every hash the same length, all valid) runs as whole-list C-level passes:
    pull the fields with attrgetter, check all hashes at once, build the tuples
    with ``map``. Anything unusual (mixed lengths with no function named, a bad
    hash, a negative size) falls back to ``Digest.parse`` per item, which also
    gives the precise error message.
    """
    if not hasattr(protos, "__len__"):
        protos = list(protos)
    hashes: list[str] = list(map(_HASH_OF, protos))
    if not hashes:
        return []
    sizes: list[int] = list(map(_SIZE_OF, protos))
    if function:
        algorithm: HashAlgorithm | None = algorithm_for(function)
    else:
        lengths = {len(h) for h in (hashes[0], hashes[-1])}
        algorithm = _BY_LENGTH.get(lengths.pop()) if len(lengths) == 1 else None
    if algorithm is None or not _all_lowercase_hex(hashes, algorithm.hex_length) or min(sizes) < 0:
        return [Digest.parse(h, size, function) for h, size in zip(hashes, sizes)]
    return list(map(_make_digest, zip(hashes, sizes, repeat(algorithm.function))))
