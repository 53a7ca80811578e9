"""The BlobStore seam: five primitives a store implements, four shortcuts built on them.

Stores hold values by ``Digest``. For the CAS the value is the blob the digest names;
for the action cache the key is an action digest and the value a serialized
ActionResult, so a store never assumes ``len(value) == digest.size_bytes``. Checking
content against its digest is the job of ``VerifyingStore`` (cas/decorators/verify.py).

**The primitives** are the only methods a store or a decorator implements::

    find_missing(digests)         the absent ones (refreshing the present ones)
    read(digest, offset, limit)   stream a value out     get_many(digests)  whole values, batched
    write(digest, chunks)         stream a value in      put_many(blobs)    whole values, batched

``write`` commits only if its chunk stream ends without an error; otherwise it leaves
no trace, so a decorator can abort an upload by raising mid-stream.

**The shortcuts** are defined here once, on the primitives, and no
subclass may override them (defining one raises TypeError), so whatever a decorator
does in a primitive applies to every way of reaching it::

    has(digest)                 find_missing([digest])
    put_bytes(digest, data)     put_many({digest: data}), raising the one failure
    get_or_none(digest)         get_many([digest]): absence is an answer, not an error
    get_bytes(digest)           get_many([digest]); if absent, read(digest), whose error
                                says where and why (or which finds a value written
                                meanwhile). With ``max_size``, read only: it stops
                                before an oversized value is whole in memory

**Batch twins.** ``get_many`` is the batch twin of ``read``, ``put_many`` of ``write``:
the same operation on whole values, many at once. They exist for speed (the packed
store appends a thousand values in one write, the disk store makes one thread hop per
part, Redis sends one MGET), and the rule that keeps them both fast and safe is:

- In ``BlobStore`` a twin defaults to its streaming primitive, one value at a time
  (up to ``EACH_CONCURRENCY`` at once): a store needs only the three abstract
  methods, and engines override the twins with their fast paths.
- ``ForwardingStore`` forwards all five to ``inner``, except that a subclass
  overriding ``read`` or ``write`` but not its twin gets that twin through its own
  streaming method, decided once when the class is defined. So a decorator that
  overrides only what it changes is correct, and it keeps batches batched (as
  fast as ``inner``) by overriding the twin as well.

Overriding only a batch twin (a test counting batch reads) leaves streams going
straight to ``inner``: a decorator that changes what is stored overrides the
streaming method.

**The framed twin.** ``read_framed(digest, frame, offset, limit)`` is ``read`` with
each chunk handed out as one ``bytes``: ``frame(len(chunk))`` followed by the chunk
(and the chunk's size beside it). It is for a consumer that must pass on each chunk
behind a header of its own as one ``bytes`` object: a ByteStream ``ReadResponse``
(gRPC's Python API sends ``bytes`` only), which otherwise joins (copies) every
chunk. Its default is ``read`` plus that join; a store that reads into memory it
allocates (the disk store) reads each chunk straight behind its frame instead, one
copy of a large read fewer. ``ForwardingStore`` treats it as ``read``'s twin (a
subclass overriding ``read`` alone gets it through its own ``read``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeVar, cast, final

from cas.digest import Digest
from cas.errors import NotFound, OutOfRange, ReapiError, ResourceExhausted

T = TypeVar("T")
R = TypeVar("R")

# Chunk size for streamed reads: large enough to amortise per-message costs in
# gRPC, well under the 4 MiB default message limit of clients.
READ_CHUNK_SIZE = 1 << 20

# A chunk of ``read_framed``: ``frame(size)`` and the chunk's bytes in one ``bytes``, and that size.
Framed = tuple[bytes, int]

# The methods built on the primitives, once, here; subclasses may not override them.
SHORTCUTS = frozenset({"has", "get_bytes", "get_or_none", "put_bytes"})

# How many values the default batch twins move at once through ``read`` or ``write``
# (enough for a packed store below to group them into few appends).
EACH_CONCURRENCY = 32


async def single_chunk(data: bytes) -> AsyncIterator[bytes]:
    """An async stream of one chunk, for writes of in-memory values."""
    if data:
        yield data


def closing(stream: AsyncIterator[T]) -> aclosing[AsyncGenerator[T, None]]:
    """Close a read stream (an async generator) when the block ends, even if the
    consumer stopped early, so the store's cleanup (a descriptor, an aborted cache
    fill) happens now, not at garbage collection."""
    return aclosing(cast(AsyncGenerator[T, None], stream))


async def framed_chunks(chunks: AsyncIterator[bytes], frame: Callable[[int], bytes]) -> AsyncIterator[Framed]:
    """Each chunk of a ``read`` stream joined behind its frame (``read_framed``'s default)."""
    async with closing(chunks) as stream:
        async for chunk in stream:
            size = len(chunk)
            yield b"".join((frame(size), chunk)), size


def check_read_range(digest: Digest, size: int, offset: int, limit: int | None) -> int:
    """Validate a read range against a value of ``size`` bytes; return its end."""
    if offset < 0:
        raise OutOfRange(f"read offset {offset} is negative")
    if offset > size:
        raise OutOfRange(f"read offset {offset} is past the end of {digest} ({size} bytes)")
    if limit is not None and limit < 0:
        raise OutOfRange(f"read limit {limit} is negative")
    return size if not limit else min(size, offset + limit)


class BlobStore(ABC):
    """Content by digest. Subclasses implement the primitives (see the module docstring)."""

    name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = SHORTCUTS.intersection(vars(cls))
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {', '.join(sorted(overridden))}: the shortcuts are built once on the "
                "primitives (cas/store.py); override find_missing, read, write, get_many or put_many instead"
            )

    # -- the primitives ----------------------------------------------------------------

    @abstractmethod
    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        """The subset of ``digests`` not held. Refreshes the lifetime of held ones."""

    @abstractmethod
    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        """Stream a value in bounded chunks (an async generator).

        Raises NotFound if absent and OutOfRange if ``offset`` is past the end, on
        the first ``__anext__``. ``limit`` None or 0 means to the end. A chunk is
        bytes-like: ``bytes``, or a read-only ``memoryview`` of a value held in
        memory (the memory store hands out views, not copies); a consumer that must
        have ``bytes`` converts it.
        """

    @abstractmethod
    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        """Store the concatenated chunks under ``digest``; all or nothing. Chunks are
        bytes-like (``bytes`` or a ``memoryview``: a ByteStream upload's are views
        of the received messages); a store that keeps one must not assume it is ``bytes``."""

    def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        """``read``, each chunk as ``(frame(size) + chunk, size)`` in one ``bytes`` (the
        module docstring says why). Same chunks, same errors, raised the same way.

        This default joins each chunk of ``read`` behind its frame; stores that read
        into buffers of their own override it."""
        return framed_chunks(self.read(digest, offset, limit), frame)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """Whole values of the held digests; absent ones are left out.

        This default reads each through ``read``; stores override it with a batch."""
        unique = list(dict.fromkeys(digests))
        values = await each(unique, self._whole_or_none)
        return {digest: value for digest, value in zip(unique, values) if value is not None}

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        """Store several values; return the failures by digest (empty when all stored).

        This default writes each through ``write``; stores override it with a batch."""
        items = list(blobs.items())
        errors = await each(items, self._write_or_error)
        return {digest: error for (digest, _), error in zip(items, errors) if error is not None}

    async def _whole_or_none(self, digest: Digest) -> bytes | None:
        try:
            return b"".join([chunk async for chunk in self.read(digest)])
        except NotFound:
            return None

    async def _write_or_error(self, item: tuple[Digest, bytes]) -> ReapiError | None:
        try:
            await self.write(item[0], single_chunk(item[1]))
        except ReapiError as err:
            return err
        return None

    # -- the shortcuts: built on the primitives, never overridden -------------------------

    @final
    async def has(self, digest: Digest) -> bool:
        return not await self.find_missing([digest])

    @final
    async def get_or_none(self, digest: Digest) -> bytes | None:
        return (await self.get_many([digest])).get(digest)

    @final
    async def get_bytes(self, digest: Digest, max_size: int | None = None) -> bytes:
        """The whole value in memory; NotFound if absent, ResourceExhausted if larger
        than ``max_size``."""
        if max_size is None:
            value = (await self.get_many([digest])).get(digest)
            if value is not None:
                return value
        parts = []
        total = 0
        async with closing(self.read(digest)) as chunks:
            async for chunk in chunks:
                total += len(chunk)
                if max_size is not None and total > max_size:
                    raise ResourceExhausted(f"value of {digest} is at least {total} bytes, over the {max_size}-byte limit")
                parts.append(chunk)
        return b"".join(parts)

    @final
    async def put_bytes(self, digest: Digest, data: bytes) -> None:
        failures = await self.put_many({digest: data})
        if failures:
            raise failures[digest]

    async def aclose(self) -> None:
        """Release connections, files and background tasks."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ForwardingStore(BlobStore):
    """Forwards every primitive to ``inner``; a decorator overrides only what it changes.

    A subclass that overrides ``read`` or ``write`` but not its twins (``get_many``
    and ``read_framed``, ``put_many``) gets each twin through its own streaming
    method, so no path bypasses it; overriding a twin too keeps it as fast as ``inner``.
    """

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        for streaming, batch in (("read", "get_many"), ("read", "read_framed"), ("write", "put_many")):
            if streaming in own and batch not in own:
                setattr(cls, batch, getattr(BlobStore, batch))

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        return await self.inner.find_missing(digests)

    def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        return self.inner.read(digest, offset, limit)

    def read_framed(
        self, digest: Digest, frame: Callable[[int], bytes], offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[Framed]:
        return self.inner.read_framed(digest, frame, offset, limit)

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        await self.inner.write(digest, chunks)

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        return await self.inner.get_many(digests)

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        return await self.inner.put_many(blobs)

    async def aclose(self) -> None:
        """Nothing of its own to release. Children may be shared by several parents,
        so whoever built the stores closes each one (see cas.config.close_stores)."""


async def each(items: Sequence[T], call: Callable[[T], Awaitable[R]], limit: int = EACH_CONCURRENCY) -> list[R]:
    """``call(item)`` for every item, at most ``limit`` at a time; the results in order.
    The first error cancels the calls still running, then is raised."""
    if len(items) <= 1:
        return [await call(item) for item in items]
    slots = asyncio.Semaphore(limit)

    async def bounded(item: T) -> R:
        async with slots:
            return await call(item)

    tasks = [asyncio.ensure_future(bounded(item)) for item in items]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise
