"""SplitBlob and SpliceBlob's rules, over any CAS.

Split streams the blob through FastCDC 2020 (cas/chunking/fastcdc.py, the parameters
Capabilities advertises), stores the chunks the CAS lacks and answers their digests
in order: all in the CAS, and rejoining to the blob. The answer is remembered for a
while (``max_remembered`` blobs), so a second split of the same blob only checks that
the blob and its chunks are still there (which refreshes them all).

Splice checks what it can before any work (the chunks' sizes add up to the blob's,
every chunk is present) and then writes the concatenation of the chunks under the
blob's digest; the CAS's verifying store checks the digest as the bytes pass, so a
wrong splice is INVALID_ARGUMENT and stores nothing. A blob already present is a
no-op, as REv2 allows. Splices are not remembered as splits: the client's chunks need
not be ours.

Large blobs are stored whole, not as their chunks (docs/BENCHMARKS.md: the chunks of
a split blob are stored beside it).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

from cas.chunking.fastcdc import FastCdc
from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound
from cas.store import BlobStore, closing

DEFAULT_MAX_REMEMBERED = 4096
# Chunks are stored in groups of about this many bytes (one find_missing, one put_many each).
GROUP_BYTES = 4 << 20


class BlobSplits:
    """Splits by FastCDC 2020 and verified splices, against the CAS given to each call."""

    def __init__(self, cdc: FastCdc | None = None, max_remembered: int = DEFAULT_MAX_REMEMBERED) -> None:
        self.cdc = cdc or FastCdc()
        self.max_remembered = max_remembered
        self._splits: OrderedDict[Digest, tuple[Digest, ...]] = OrderedDict()

    async def split(self, cas: BlobStore, digest: Digest) -> tuple[Digest, ...]:
        """The digests of ``digest``'s chunks, in order, every one of them in ``cas``."""
        known = self._splits.get(digest)
        if known is not None:
            missing = await cas.find_missing({digest, *known})
            if digest in missing:
                raise NotFound(f"blob {digest} is not in the CAS")
            if not missing:
                self._splits.move_to_end(digest)
                return known
        chunks = await self._chunk_and_store(cas, digest)
        self._splits[digest] = chunks
        self._splits.move_to_end(digest)
        while len(self._splits) > self.max_remembered:
            self._splits.popitem(last=False)
        return chunks

    async def _chunk_and_store(self, cas: BlobStore, digest: Digest) -> tuple[Digest, ...]:
        chunker = self.cdc.chunker()
        digests: list[Digest] = []
        group: list[bytes] = []

        async def flush() -> None:
            found = await asyncio.to_thread(_digests_of, group, digest.function)
            missing = await cas.find_missing(found)
            if missing:
                failures = await cas.put_many({d: c for d, c in zip(found, group) if d in missing})
                for failure in failures.values():
                    raise failure.with_context(f"storing a chunk of {digest}")
            digests.extend(found)
            group.clear()

        async with closing(cas.read(digest)) as pieces:
            async for piece in pieces:
                group.extend(await asyncio.to_thread(chunker.feed, piece))
                if sum(map(len, group)) >= GROUP_BYTES:
                    await flush()
        group.extend(chunker.finish())
        if group:
            await flush()
        return tuple(digests)

    async def splice(self, cas: BlobStore, blob: Digest, chunks: Sequence[Digest]) -> Digest:
        """Store ``blob`` as the concatenation of ``chunks`` (all in ``cas``) if it matches."""
        total = sum(c.size_bytes for c in chunks)
        if total != blob.size_bytes:
            raise InvalidArgument(
                f"the {len(chunks)} chunks add up to {total} bytes, but blob {blob} has {blob.size_bytes}"
            )
        if await cas.has(blob):
            return blob
        missing = await cas.find_missing(set(chunks))
        if missing:
            shown = ", ".join(str(d) for d in sorted(missing)[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise NotFound(f"{len(missing)} chunks of {blob} are not in the CAS: {shown}{more}")
        await cas.write(blob, _concatenation(cas, chunks))
        return blob


async def _concatenation(cas: BlobStore, chunks: Sequence[Digest]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        async with closing(cas.read(chunk)) as pieces:
            async for piece in pieces:
                yield piece


def _digests_of(chunks: list[bytes], function: int) -> list[Digest]:
    return [Digest.of(chunk, function) for chunk in chunks]
