"""FileCache: the worker's local CAS, one read-only file per blob, shared by all leases.

Exec roots are built by hardlinking from here, so an input that is already cached
costs one ``link`` syscall. Executable and non-executable copies are separate files
(a hardlink shares its inode, and so its mode), so one blob used both ways never
flips another lease's permissions.

Fetches get only what is missing, deduplicated across concurrent leases: small
blobs through the source's batched ``get_many`` (or a read ahead's answer,
worker/read_ahead.py), large ones streamed to a temp file.
Every blob is verified against its digest before it is written anywhere; a file
cut short by a crash has the wrong size, which the start-up scan removes, so a bad
download never leaves a wrong file under a good name. With a placer (an action's
cold inputs, worker/input_placer.py) a batch is written once, where the action
wants it, and that same read-only, worker-owned file becomes the cache's: linked
at once, or, from a tree to mount, adopted off the input path (``adopt_later``;
leases wanting it meanwhile wait instead of fetching it again). The cache is
capped by size and evicts least recently used files that no lease is linking at
that moment; a file already linked into an exec root lives on there even if
evicted here.

Trust: cache files belong to the worker and have no write bit, and the sandbox
links them only into actions that cannot write them (worker/sandbox/). A clean
shutdown leaves a marker (``.clean``); a start without it (a crash, a kill, an old
worker that let actions write inputs) doubts every file it finds and hashes each
before its first use, so a file changed behind the worker's back is fetched again.
The start-up scan also drops files of the wrong size, owner or mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from operator import itemgetter
from pathlib import Path

from cas.digest import Digest
from cas.errors import Internal, MissingBlobs, NotFound
from cas.store import BlobStore
from worker.cache_adoption import Adoptions
from worker.cache_index import CacheIndex, count_in, count_out
from worker.cache_files import (
    CLEAN_MARKER, CacheKey, batches_of, received, cache_name, check_fetched, copy_modes, file_matches,
    link_all_into_cache, open_scan, stream_into_cache, take_output, write_cache_file,
)
from worker.input_placer import InputPlacer
from worker.read_ahead import ReadAhead, ReadAheadHandle, at_hand, read_with

log = logging.getLogger("reapi.worker")

# Blobs up to this size are fetched in batches and held in memory briefly.
SMALL_BLOB = 1 << 20
# How many bytes of small blobs one batched fetch holds in memory at once.
BATCH_BYTES = 8 << 20
# How many small blobs one batched fetch asks for: one call of 1,000 measured faster than
# four of 250 (each costs the worker ~1 ms of grpc.aio; docs/BENCHMARKS.md).
BATCH_BLOBS = 1000


class FileCache:
    """Blob files under ``root``; fetched from ``source`` on demand."""

    def __init__(self, root: Path, max_bytes: int, entries: Iterable[tuple[CacheKey, int]] = (),
                 doubted: Iterable[CacheKey] = ()) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self.tmp_dir = str(self._tmp)
        self._root = str(root)
        self._lru = CacheIndex(entries)  # value: the file's size (its weight)
        self._pins: dict[CacheKey, int] = {}
        self._inflight: dict[Digest, asyncio.Future[None]] = {}
        self._doubted = set(doubted)  # files to hash before their next use
        self._verifying: dict[CacheKey, asyncio.Future[None]] = {}
        self._adoptions = Adoptions()
        self.read_ahead = ReadAhead(BATCH_BYTES, BATCH_BLOBS)
        # Told of every file that enters (True) or leaves (False): the cache summary the
        # worker sends for locality dispatch (worker/cache_summary.py).
        self.watcher: Callable[[Digest, bool], None] | None = None
        self.fetched_blobs = 0  # counters for tests and metrics
        self.fetched_bytes = 0
        self.verified_blobs = 0
        self.rejected_blobs = 0

    @classmethod
    async def open(cls, root: Path, max_bytes: int) -> FileCache:
        """Create the layout if needed and index what an earlier run left (LRU by mtime);
        after an unclean stop every file is doubted until hashed."""
        clean, entries = await asyncio.to_thread(open_scan, root)
        doubted = [] if clean else [key for key, _ in entries]
        if doubted:
            log.warning("the worker cache %s was not closed cleanly; its %d files are each verified before "
                        "their first use", root, len(doubted))
        return cls(root, max_bytes, entries, doubted)

    def close(self) -> None:
        """At a clean shutdown (nothing writes any more): the next start may trust the files."""
        (self.root / CLEAN_MARKER).touch()

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def total_bytes(self) -> int:
        return self._lru.total

    def newest(self, count: int) -> Iterator[CacheKey]:
        """Up to ``count`` cache keys, most recently used first."""
        return self._lru.newest(count)

    def path_of(self, digest: Digest, executable: bool) -> str:
        """The cache file of a blob (a string: this runs once per input file of every action)."""
        return f"{self._root}/{digest.algorithm.name}/{digest.hash[:2]}/{cache_name(digest, executable)}"

    # -- the one public operation exec roots need ------------------------------------

    @asynccontextmanager
    async def pinned(self, keys: Collection[CacheKey], source: BlobStore,
                     placer: InputPlacer | None = None) -> AsyncIterator[None]:
        """Inside the block, every key's file (``path_of``) is present and will not be evicted;
        ``placer`` is given the files this fetches as each batch is written."""
        keys = set(keys)
        count_in(self._pins, keys)
        try:
            if not await self.ensure(keys, source, placer):  # some were cached: a use refreshes them
                peek, refresh = self._lru.accessors()  # one C call per key, not a method call
                for key in keys:
                    if peek(key) is not None:  # (adopted files enter later)
                        refresh(key)
            yield
        finally:
            count_out(self._pins, keys)
            self._evict()

    def read_ahead_for(self, keys: list[CacheKey], source: BlobStore,
                       carried: Mapping[Digest, bytes] | None = None) -> ReadAheadHandle:
        """Start reading small blobs of ``keys`` no one has or fetches (worker/read_ahead.py);
        those in ``carried`` (the lease's inline blobs) are taken from there."""
        absent = [] if self._doubted else list(self._absent(keys))
        if absent and max(map(_by_size, absent)) > SMALL_BLOB:
            absent = [d for d in absent if d.size_bytes <= SMALL_BLOB]
        return self.read_ahead.start(absent, source, carried)

    async def ensure(self, keys: Collection[CacheKey], source: BlobStore, placer: InputPlacer | None = None) -> bool:
        """Have every (digest, executable) file present; MissingBlobs names what the source lacks.
        Fetched blobs are written in every mode ``keys`` asks for. True: none was cached before."""
        if self._doubted or self._verifying:
            await self._verify([k for k in keys if k in self._doubted or k in self._verifying])
        cached = self._lru.accessors()[0]
        if self._lru.holds_none(map(_by_digest, keys)):  # a cold tree: no lookup per key
            wanted = list(keys)
        else:
            wanted = [k for k in keys if cached(k) is None]
        if not wanted:
            return not keys
        new = len(wanted) == len(keys)
        # Blobs another lease is fetching are awaited, not fetched twice; if that
        # fetch fails, whatever is still absent is fetched here (with our own error).
        waits = set(filter(None, map(self._inflight.get, map(_by_digest, wanted)))) if self._inflight else set()
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        if to_fetch := self._absent(wanted):
            await self._fetch(to_fetch, source, placer)
        placed = placer.placed if placer is not None else set()
        if placed.issuperset(wanted):  # the usual cold fetch: every file written by this lease
            return new
        racing = {self._inflight[d] for d, x in wanted if d in self._inflight and (d, x) not in placed}
        if racing:  # started (or still being adopted) by another lease while we awaited
            await asyncio.gather(*racing, return_exceptions=True)
            if late := self._absent([k for k in wanted if k not in placed]):  # that lease failed
                await self._fetch(late, source, placer)
        # A copy in the other mode is a local copy away.
        copies = [(d, x) for d, x in wanted if (d, x) not in self._lru and (d, x) not in placed]
        absent = {d for d, x in copies if (d, not x) not in self._lru}
        if absent:
            raise MissingBlobs(absent, "input blobs")
        if copies:
            await self._copy_modes(copies)
        return new

    def _absent(self, keys: list[CacheKey]) -> dict[Digest, tuple[bool, ...]]:
        """The blobs of ``keys`` cached in neither mode and fetched by no one, with the modes wanted."""
        return self._lru.absent(keys, self._inflight)

    async def _verify(self, keys: list[CacheKey]) -> None:
        """Hash doubted files; a wrong one leaves the cache (and is fetched again)."""
        mine = [k for k in keys if k not in self._verifying]
        others = [self._verifying[k] for k in keys if k in self._verifying]
        loop = asyncio.get_running_loop()
        futures = {k: loop.create_future() for k in mine}
        self._verifying.update(futures)
        try:
            results = await asyncio.to_thread(lambda: [(k, file_matches(self.path_of(*k), k[0])) for k in mine])
            for key, good in results:
                self._doubted.discard(key)
                self.verified_blobs += 1
                if not good and self._lru.pop(key) is not None:
                    log.warning("cache file %s does not match its digest; removed", self.path_of(*key))
                    self.rejected_blobs += 1
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path_of(*key))
        finally:
            for key, future in futures.items():
                self._verifying.pop(key, None)
                future.set_result(None)
        if others:
            await asyncio.gather(*others)

    # -- fetching -----------------------------------------------------------------------

    async def _fetch(self, modes: dict[Digest, tuple[bool, ...]], source: BlobStore, placer: InputPlacer | None) -> None:
        """Fetch ``modes``' blobs, each written in the modes given (large ones non-executable
        only: ``ensure`` copies them into the other mode)."""
        done = asyncio.get_running_loop().create_future()  # one for the whole fetch: waiters re-check the index
        self._inflight.update(dict.fromkeys(modes, done))
        try:
            if max(map(_by_size, modes), default=0) <= SMALL_BLOB:  # the usual: no loop per blob
                small, large = sorted(modes, key=_by_size), []
            else:
                small = sorted((d for d in modes if d.size_bytes <= SMALL_BLOB), key=_by_size)
                large = [d for d in modes if d.size_bytes > SMALL_BLOB]
            results = await asyncio.gather(
                *(self._fetch_small(group, modes, source, placer)
                  for group in batches_of(small, BATCH_BYTES, BATCH_BLOBS)),
                *(self._fetch_large(d, source) for d in large),
                return_exceptions=True,
            )
            missing: set[Digest] = set()
            for result in results:
                if isinstance(result, MissingBlobs):
                    missing.update(result.digests)
                elif isinstance(result, BaseException):
                    raise result
            if missing:
                raise MissingBlobs(missing, "input blobs")
        finally:
            inflight = self._inflight
            for digest in [d for d in modes if inflight.get(d) is done]:  # not those waiting to be adopted
                del inflight[digest]
            done.set_result(None)

    async def _fetch_small(self, digests: list[Digest], modes: dict[Digest, tuple[bool, ...]], source: BlobStore,
                           placer: InputPlacer | None) -> None:
        rest, ahead = self.read_ahead.take(digests)  # blobs asked for already (read_ahead_for)
        found = at_hand(rest, ahead)  # all of them carried by the lease (or read already): no read, no task
        if found is None:
            reading = asyncio.ensure_future(read_with(source, rest, ahead) if ahead else source.get_many(digests))
            if placer is not None and not placer.started:
                try:  # two turns of the loop: grpc.aio sends a request from a task of its own
                    if rest:
                        await asyncio.sleep(0)
                        await asyncio.sleep(0)
                    placer.start()  # plan and make the directories while the blobs are on the wire
                except BaseException:
                    reading.cancel()
                    raise
            found = await reading  # with reads ahead, it may hold others' blobs too
        elif placer is not None:
            placer.start_here()
        missing, blobs = received(digests, modes, found, bool(ahead))
        if placer is not None:
            await placer.ready()
        # Batches are written at once on several threads: on a busy disk, one thread's
        # writes waiting for the journal or for dirty pages to drain do not stop the rest.
        try:
            deferred = await asyncio.to_thread(self._store_verified, blobs, placer)
        except Internal:
            if not ahead:
                raise
            # A blob read ahead, or the copy the lease carried, did not match its digest: the CAS's own
            # copies, once (nothing was written: the whole batch is verified first).
            missing, blobs = received(digests, modes, await source.get_many(digests), True)
            deferred = await asyncio.to_thread(self._store_verified, blobs, placer)
        # A blob wanted in both modes was fetched once: counted in its first mode only.
        if len(deferred) < len(blobs):
            for (digest, executable), data in ([b for b in blobs if b[0] not in deferred] if deferred else blobs):
                self._add((digest, executable), len(data), fetched=executable == modes[digest][0])
        if deferred:  # others wait for adopt_later rather than fetch these again
            adoption = asyncio.get_running_loop().create_future()
            firsts: Collection[Digest] = set(map(_by_digest, deferred))  # all of the batch: each once
            self._inflight.update(dict.fromkeys(firsts, adoption))
            if len(deferred) < len(blobs):
                firsts = [digest for digest, executable in deferred if executable == modes[digest][0]]
            self.fetched_blobs += len(firsts)
            self.fetched_bytes += sum(map(_by_size, firsts))  # verified: each blob's size
        if missing:
            raise MissingBlobs(missing, "input blobs")

    def _store_verified(self, blobs: list[tuple[CacheKey, bytes]], placer: InputPlacer | None) -> set[CacheKey]:
        """Verify blobs, then write them as cache files or hand them to ``placer`` (blocking)."""
        check_fetched(blobs)
        if placer is not None:
            return placer.stored(blobs)
        for (digest, executable), data in blobs:
            write_cache_file(self.path_of(digest, executable), data, executable, self.tmp_dir)
        return set()

    async def _fetch_large(self, digest: Digest, source: BlobStore) -> None:
        """Stream one large blob to a temp file, hashing as it goes, then rename it in."""
        try:
            size = await stream_into_cache(digest, source, self._tmp / uuid.uuid4().hex, self.path_of(digest, False))
        except NotFound:
            raise MissingBlobs([digest], "input blobs") from None
        self._add((digest, False), size)

    async def _copy_modes(self, keys: list[CacheKey]) -> None:
        """Make the other-mode copy of blobs already cached in one mode."""
        sources = [(d, not x) for d, x in keys]
        count_in(self._pins, sources)
        try:
            await asyncio.to_thread(copy_modes, keys, self.path_of, self.tmp_dir)
        finally:
            count_out(self._pins, sources)
        for digest, executable in keys:
            self._add((digest, executable), digest.size_bytes, fetched=False)

    # -- adding outputs and bookkeeping ---------------------------------------------------

    def adopt_later(self, files: list[tuple[CacheKey, str]], after: asyncio.Event | None = None) -> None:
        """Take fetched files a placer wrote in place only (worker-owned, read-only, in
        directories no action can change) into the cache, in the background, once
        ``after`` is set (the action's inputs are in place): off the input path. Until
        then leases wanting them wait rather than fetch them again; a file gone by then
        (its tree removed) is simply not cached."""
        if files:
            self._adoptions.later([digest for (digest, _), _ in files], after, self._inflight,
                                  lambda: link_all_into_cache(files, self.path_of, self.tmp_dir),
                                  lambda key: self._add(key, key[0].size_bytes, fetched=False))

    async def drain(self) -> None:
        """Wait for adoptions in progress (tests, shutdown)."""
        await self._adoptions.drain()

    def adopt(self, source: Path, digest: Digest, executable: bool) -> bool:
        """Hardlink a finished output into the cache (blocking; call in a thread).

        Outputs of one action are often inputs of the next; taking them costs a link.
        The caller must not change ``source`` afterwards (exec roots are deleted).
        """
        if (digest, executable) in self._lru:
            return False
        return take_output(source, self.path_of(digest, executable), executable, self.tmp_dir)

    def note_adopted(self, digest: Digest, executable: bool) -> None:
        """Index a file ``adopt`` placed (on the event loop, where the index lives)."""
        self._add((digest, executable), digest.size_bytes, fetched=False)

    def _add(self, key: CacheKey, size: int, fetched: bool = True) -> None:
        """Index a new cache file; ``fetched``: it came from the server (not an adopted
        output or a copy in the other mode), for the fetch counters."""
        if self._lru.get(key) is not None:  # already there: a use
            return
        self._lru.put(key, size)
        if self.watcher is not None:
            self.watcher(key[0], True)
        if fetched:
            self.fetched_blobs += 1
            self.fetched_bytes += size

    def _evict(self, target: int | None = None) -> int:
        """Evict least recently used, unpinned files down to ``target`` bytes (default the
        cap); the bytes freed."""
        freed = 0
        for key, size in self._lru.evict(self.max_bytes if target is None else target, self._may_evict):
            freed += size
            if self.watcher is not None:
                self.watcher(key[0], False)
            try:
                os.unlink(self.path_of(*key))
            except FileNotFoundError:
                pass
        return freed

    def make_room(self, wanted: int) -> int:
        """Evict unpinned files to free ``wanted`` bytes of disk (after the disk filled up)."""
        return self._evict(max(0, self.total_bytes - wanted))

    def _may_evict(self, key: CacheKey) -> bool:
        """Not while a lease links it, nor while its blob is being fetched."""
        return key not in self._pins and key[0] not in self._inflight


_by_size = itemgetter(1)  # Digest.size_bytes, without a Python call per blob
_by_digest = itemgetter(0)  # a cache key's Digest

