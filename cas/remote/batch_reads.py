"""BatchReadBlobs answers and requests handled without a Python iteration per blob.

Why: a worker's cold input fetch reads 1,000 small blobs in one call, and per-blob
Python code (a Digest built, a status and a compressor checked per entry) cost it
more than the call itself. The common case, every blob found and none compressed,
is done in C-level passes; anything else is left to the caller's per-blob path,
which gives the precise errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any

from cas.digest import Digest

_STATUS_CODE = attrgetter("status.code")
_COMPRESSOR = attrgetter("compressor")
_DIGEST = attrgetter("digest")
_PROTO_HASH = attrgetter("hash")
_DATA = attrgetter("data")
SIZE_BYTES = attrgetter("size_bytes")  # of a Digest, for sorting and sums in C
_MAKE_DIGEST = partial(tuple.__new__, Digest)  # a Digest from (hash, size, function), as the server sent it


def all_found(responses: Sequence[Any], function: int) -> dict[Digest, bytes] | None:
    """The blobs of BatchReadBlobs ``responses`` if every one was found and none is
    compressed; None otherwise (the caller reads them one by one).

    Each pass over a repeated field (or into a sub-message) makes a Python object per
    entry, so the entries and their digests are taken once and every pass reads those."""
    items = list(responses)
    if any(map(_STATUS_CODE, items)) or any(map(_COMPRESSOR, items)):
        return None
    digests = list(map(_DIGEST, items))
    made = map(_MAKE_DIGEST, zip(map(_PROTO_HASH, digests), map(SIZE_BYTES, digests), repeat(function)))
    return dict(zip(made, map(_DATA, items)))


def request_digests(request: Any, digests: Iterable[Digest]) -> None:
    """Append ``digests`` to a request's repeated Digest field ``digests`` (one ``add``
    each costs less than building a Digest message each and copying the list in)."""
    add = request.digests.add
    for hash_hex, size_bytes, _ in digests:
        add(hash=hash_hex, size_bytes=size_bytes)


def batches(digests: list[Digest], entry_overhead: int, max_bytes: int) -> Iterable[list[Digest]]:
    """Consecutive groups of blobs that fit a batch of ``max_bytes`` (each blob with
    ``entry_overhead``); all of them at once, without a loop per blob, when they fit."""
    if sum(map(SIZE_BYTES, digests)) + len(digests) * entry_overhead <= max_bytes:
        yield digests  # one batch holds them all (the worker asks in batches already)
        return
    batch: list[Digest] = []
    total = 0
    for digest in digests:
        cost = digest.size_bytes + entry_overhead
        if batch and total + cost > max_bytes:
            yield batch
            batch, total = [], 0
        batch.append(digest)
        total += cost
    if batch:
        yield batch


def largest_fits(digests: Iterable[Digest], entry_overhead: int, max_bytes: int) -> bool:
    """Whether every one of these blobs fits in a batch on its own."""
    return max(map(SIZE_BYTES, digests), default=0) + entry_overhead <= max_bytes
