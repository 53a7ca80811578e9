"""``reapi_cas_bytes_total`` and ``reapi_cas_blobs_total``: a decorator over each
instance's CAS that counts what goes in and out, whoever asks (clients, workers, the
scheduler's validation). Reads count the bytes handed out; writes count once they
are committed. Present only when metrics are on."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping

from cas.digest import Digest
from cas.errors import ReapiError
from cas.store import BlobStore, ForwardingStore, Framed
from server.metrics.families import ServerMetrics


class CountingStore(ForwardingStore):
    def __init__(self, inner: BlobStore, metrics: ServerMetrics) -> None:
        super().__init__(inner)
        self.name = inner.name
        self.metrics = metrics

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        read_bytes = self.metrics.cas_read_bytes
        async for chunk in self.inner.read(digest, offset, limit):
            read_bytes.inc(len(chunk))
            yield chunk
        self.metrics.cas_read_blobs.inc()

    async def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        read_bytes = self.metrics.cas_read_bytes
        async for framed in self.inner.read_framed(digest, frame, offset, limit):
            read_bytes.inc(framed[1])
            yield framed
        self.metrics.cas_read_blobs.inc()

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        total = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal total
            async for chunk in chunks:
                total += len(chunk)
                yield chunk

        await self.inner.write(digest, counted())
        self.metrics.cas_write_bytes.inc(total)
        self.metrics.cas_write_blobs.inc()

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        found = await self.inner.get_many(digests)
        if found:
            self.metrics.cas_read_blobs.inc(len(found))
            self.metrics.cas_read_bytes.inc(sum(map(len, found.values())))
        return found

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        failures = await self.inner.put_many(blobs)
        stored = [data for digest, data in blobs.items() if digest not in failures]
        if stored:
            self.metrics.cas_write_blobs.inc(len(stored))
            self.metrics.cas_write_bytes.inc(sum(map(len, stored)))
        return failures


def count_instance_stores(stores: Mapping[str, BlobStore], cas_names: Iterable[str],
                          metrics: ServerMetrics) -> dict[str, BlobStore]:
    """``stores`` with each instance CAS (once, even if several instances share it) counted."""
    counted = dict(stores)
    for name in set(cas_names):
        counted[name] = CountingStore(stores[name], metrics)
    return counted
