"""The CAS batch calls' rules: one store call per batch, a cap on the whole, errors per blob.

BatchUpdateBlobs and BatchReadBlobs are the hot path for many small blobs, so each
batch is one store call (``put_many``, ``get_many``) and its digests are validated
in one vectorised pass (``digests_each``), falling back to one by one only to say
which entry is malformed. A batch whose blobs add up to more than
``max_total_bytes`` is refused whole, naming the limit; a malformed digest, a
compressor we do not serve, data that does not decompress or match, or a failed
store write fails only its own entry, as REv2 asks.

Entries may be compressed (``compressor``, one of Capabilities'
supported_batch_update_compressors) and reads may be answered compressed (one of the
request's ``acceptable_compressors``, when it saves at least ``MIN_SAVING``).

The same digest may come twice in one batch. When its entries carry the same data
they share one store write and its outcome; when they differ, each entry's data is
checked on its own, the one that matches is stored, and every other entry gets its
own INVALID_ARGUMENT (good-then-bad and bad-then-good alike).

A failed read fails only its own entry too: when the batch read fails (a sharded CAS with one shard down),
each blob is read alone, and only those whose read fails get its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

from cas.compression.codecs import IDENTITY, Codecs
from cas.compression.forms import CompressedForms
from cas.decorators.verify import verify_bytes
from cas.digest import Digest, algorithm_for, digests_from_protos
from cas.errors import InvalidArgument, ReapiError
from cas.store import BlobStore, each
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

# Batches carrying at least this many bytes are (de)compressed in a worker thread.
THREADED_BYTES = 256 << 10
# A blob is sent compressed only if that saves at least this fraction of its size,
# and only from this size on (smaller ones gain too little for the work).
MIN_SAVING = 0.1
MIN_COMPRESSED_READ = 1 << 10


class BatchUpdate(NamedTuple):
    digests: list[Digest | None]  # per entry; None where the digest is malformed
    errors: dict[int, ReapiError]  # by entry position; empty when every blob is stored


class BatchRead(NamedTuple):
    digests: list[Digest | None]  # per entry; None where the digest is malformed
    refused: dict[int, ReapiError]  # by entry position: malformed digests, and blobs whose read failed
    found: dict[Digest, bytes]  # the blobs there are; the others are absent


class BlobBatches:
    """Batch writes and reads against a CAS, within ``max_total_bytes`` per batch."""

    def __init__(self, max_total_bytes: int, codecs: Codecs | None = None, forms: CompressedForms | None = None) -> None:
        self.max_total_bytes = max_total_bytes
        self.codecs = codecs if codecs is not None else Codecs()
        self.forms = forms if forms is not None else CompressedForms()

    def check_total(self, total: int, what: str) -> None:
        if total > self.max_total_bytes:
            raise InvalidArgument(
                f"{what} asks for {total} bytes in one batch, over this server's limit of "
                f"{self.max_total_bytes} bytes (max_batch_total_size_bytes); use ByteStream for the rest"
            )

    async def update(
        self,
        cas: BlobStore,
        digests: Sequence[re_pb2.Digest],
        function: int,
        datas: Sequence[bytes],
        compressors: Sequence[int],
    ) -> BatchUpdate:
        """Store each entry's data under its digest; ``compressors`` are the entries' own."""
        total = sum(map(len, datas))
        self.check_total(total, "BatchUpdateBlobs")
        parsed, refused = digests_each(digests, function)
        if set(compressors) != {IDENTITY}:
            datas = await self._decompressed(parsed, datas, compressors, refused, total)
        if refused:
            blobs = {d: data for i, (d, data) in enumerate(zip(parsed, datas)) if i not in refused and d is not None}
        else:
            blobs = dict(zip(parsed, datas))  # type: ignore[arg-type]
        if len(blobs) + len(refused) < len(parsed):
            blobs = _settle_duplicates(parsed, datas, refused)
        failures = await cas.put_many(blobs) if blobs else {}
        if failures:
            for i, digest in enumerate(parsed):
                if i not in refused and digest is not None and digest in failures:
                    refused[i] = failures[digest]
        return BatchUpdate(parsed, refused)

    async def _decompressed(
        self,
        parsed: list[Digest | None],
        datas: Sequence[bytes],
        compressors: Sequence[int],
        refused: dict[int, ReapiError],
        total: int,
    ) -> list[bytes]:
        """Each entry's blob bytes; an entry whose data cannot be decompressed joins ``refused``."""

        def work() -> list[bytes]:
            out = list(datas)
            for i, (digest, compressor) in enumerate(zip(parsed, compressors)):
                if compressor == IDENTITY or digest is None or i in refused:
                    continue
                try:
                    codec = self.codecs.require(compressor, f"BatchUpdateBlobs entry {i} ({digest})")
                    out[i] = codec.decompress(datas[i], digest.size_bytes)
                except InvalidArgument as err:
                    refused[i] = err if err.message.startswith("BatchUpdateBlobs") else err.with_context(f"blob {digest}")
            return out

        return await asyncio.to_thread(work) if total >= THREADED_BYTES else work()

    async def read(self, cas: BlobStore, digests: Sequence[re_pb2.Digest], function: int) -> BatchRead:
        """Each distinct well-formed digest's blob, if the CAS has it."""
        parsed, refused = digests_each(digests, function)
        wanted: set[Digest] = {d for d in parsed if d is not None}
        self.check_total(sum(d.size_bytes for d in wanted), "BatchReadBlobs")
        try:
            found = await cas.get_many(wanted) if wanted else {}
        except ReapiError as err:
            found, failed = await read_each(cas, wanted, err)
            refused.update((i, failed[d]) for i, d in enumerate(parsed) if d in failed)
        return BatchRead(parsed, refused, found)

    async def compress_found(self, found: dict[Digest, bytes], acceptable: Sequence[int]) -> dict[Digest, int]:
        """Replace found blobs by their compressed forms where one of the ``acceptable``
        compressors we serve saves ``MIN_SAVING``; return the compressor of each replaced."""
        usable = [c for c in map(self.codecs.get, sorted(set(acceptable) - {IDENTITY})) if c is not None]
        if not usable:
            return {}
        codec = usable[0]  # zstd before deflate: faster and smaller
        compressed: dict[Digest, int] = {}
        for digest, data in found.items():
            if len(data) < MIN_COMPRESSED_READ:
                continue
            form = self.forms.cached(digest, codec)
            if form is None:
                if len(data) >= THREADED_BYTES:
                    form = await asyncio.to_thread(codec.compress, data)
                else:
                    form = await self.forms.compress_whole(digest, data, codec)
            if len(form) <= len(data) * (1 - MIN_SAVING):
                found[digest] = form
                compressed[digest] = codec.value
        return compressed


def _settle_duplicates(
    parsed: list[Digest | None], datas: Sequence[bytes], refused: dict[int, ReapiError]
) -> dict[Digest, bytes]:
    """The blobs to store when a digest comes more than once: entries that disagree are
    each checked against the digest; the matching data is stored, the others refused."""
    by_digest: dict[Digest, list[int]] = {}
    for i, digest in enumerate(parsed):
        if digest is not None and i not in refused:
            by_digest.setdefault(digest, []).append(i)
    blobs: dict[Digest, bytes] = {}
    for digest, entries in by_digest.items():
        if len({datas[i] for i in entries}) == 1:
            blobs[digest] = datas[entries[0]]
            continue
        for i in entries:
            try:
                verify_bytes(digest, datas[i])
            except InvalidArgument as err:
                refused[i] = err
            else:
                blobs[digest] = datas[i]
    return blobs


async def read_each(
    cas: BlobStore, digests: set[Digest], batch_error: ReapiError
) -> tuple[dict[Digest, bytes], dict[Digest, ReapiError]]:
    """Each blob read on its own, after the batch read failed with ``batch_error``:
    the blobs there are, and the failure of each blob whose read failed."""
    if len(digests) == 1:
        return {}, dict.fromkeys(digests, batch_error)

    async def one(digest: Digest) -> bytes | ReapiError | None:
        try:
            return (await cas.get_many([digest])).get(digest)
        except ReapiError as err:
            return err

    ordered = list(digests)
    found: dict[Digest, bytes] = {}
    failed: dict[Digest, ReapiError] = {}
    for digest, result in zip(ordered, await each(ordered, one)):
        if isinstance(result, ReapiError):
            failed[digest] = result
        elif result is not None:
            found[digest] = result
    return found, failed


def digests_each(protos: Sequence[re_pb2.Digest], function: int) -> tuple[list[Digest | None], dict[int, ReapiError]]:
    """Validate batch digests; a malformed one fails only its own entry.

    An unsupported digest function fails the whole request (it applies to all).
    """
    if function:
        algorithm_for(function)
    try:
        return list(digests_from_protos(protos, function)), {}
    except InvalidArgument:
        pass
    digests: list[Digest | None] = []
    refused: dict[int, ReapiError] = {}
    for i, proto in enumerate(protos):
        try:
            digests.append(Digest.from_proto(proto, function))
        except InvalidArgument as err:
            digests.append(None)
            refused[i] = err
    return digests, refused
