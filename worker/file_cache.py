"""FileCache: the worker's local CAS, one read-only file per blob, shared by all leases.

Exec roots are built by hardlinking from here, so an input that is already cached
costs one ``link`` syscall. Executable and non-executable copies are separate files
(a hardlink shares its inode, and so its mode), so one blob used both ways never
flips another lease's permissions.

Fetches get only what is missing, deduplicated across concurrent leases: small
blobs through the source's batched ``get_many``, large ones streamed to a temp file.
Every blob is verified against its digest before it enters the cache, and enters
by rename, so a crash or a bad download never leaves a wrong file under a good
name. The cache is capped by size and evicts least recently used files that no
lease is linking at that moment; a file already linked into an exec root lives on
there even if evicted here.

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
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from cas.digest import Digest
from cas.errors import Internal, MissingBlobs, NotFound, ReapiError
from cas.lru import Lru
from cas.store import BlobStore
from cas.decorators.verify import verify_bytes
from worker.cache_files import (
    CLEAN_MARKER, MODE, CacheKey, cache_name, file_matches, open_scan, rename_into,
)

log = logging.getLogger("reapi.worker")

# Blobs up to this size are fetched in batches and held in memory briefly.
SMALL_BLOB = 1 << 20
# How many bytes of small blobs one batched fetch holds in memory at once.
BATCH_BYTES = 8 << 20
# How many small blobs one batched fetch asks for: several smaller batches go out at
# once, and the first ones are written while the later ones are still coming.
BATCH_BLOBS = 250


class FileCache:
    """Blob files under ``root``; fetched from ``source`` on demand."""

    def __init__(self, root: Path, max_bytes: int, entries: Iterable[tuple[CacheKey, int]] = (),
                 doubted: Iterable[CacheKey] = ()) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self._root = str(root)
        self._lru: Lru[CacheKey, int] = Lru(_size, entries)  # value: the file's size
        self._pins: dict[CacheKey, int] = {}
        self._inflight: dict[Digest, asyncio.Future[None]] = {}
        self._doubted = set(doubted)  # files to hash before their next use
        self._verifying: dict[CacheKey, asyncio.Future[None]] = {}
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
    async def pinned(self, keys: Collection[CacheKey], source: BlobStore) -> AsyncIterator[None]:
        """Inside the block, every key's file (``path_of``) is present and will not be evicted."""
        keys = set(keys)
        self._pin(keys)
        try:
            await self.ensure(keys, source)
            for key in keys:
                self._lru.get(key)  # a use: refresh it
            yield
        finally:
            self._unpin(keys)
            self._evict()

    def _pin(self, keys: Iterable[CacheKey]) -> None:
        for key in keys:
            self._pins[key] = self._pins.get(key, 0) + 1

    def _unpin(self, keys: Iterable[CacheKey]) -> None:
        for key in keys:
            count = self._pins.pop(key) - 1
            if count:
                self._pins[key] = count

    async def ensure(self, keys: Collection[CacheKey], source: BlobStore) -> None:
        """Have every (digest, executable) file present; MissingBlobs names what the source lacks."""
        if self._doubted or self._verifying:
            await self._verify([k for k in keys if k in self._doubted or k in self._verifying])
        wanted = [k for k in keys if k not in self._lru]
        if not wanted:
            return
        # Blobs another lease is fetching are awaited, not fetched twice; if that
        # fetch fails, whatever is still absent is fetched here (with our own error).
        waits = {self._inflight[d] for d, _ in wanted if d in self._inflight}
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        to_fetch = {
            d for d, _ in wanted
            if (d, True) not in self._lru and (d, False) not in self._lru and d not in self._inflight
        }
        if to_fetch:
            await self._fetch(to_fetch, source)
        racing = {self._inflight[d] for d, _ in wanted if d in self._inflight}
        if racing:  # started by another lease while we awaited; rare
            await asyncio.gather(*racing, return_exceptions=True)
        # A copy in the other mode is a local copy away.
        copies = [(d, x) for d, x in wanted if (d, x) not in self._lru]
        absent = {d for d, x in copies if (d, not x) not in self._lru}
        if absent:
            raise MissingBlobs(absent, "input blobs")
        if copies:
            await self._copy_modes(copies)

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

    async def _fetch(self, digests: set[Digest], source: BlobStore) -> None:
        loop = asyncio.get_running_loop()
        futures = {d: loop.create_future() for d in digests}
        self._inflight.update(futures)
        try:
            small = sorted((d for d in digests if d.size_bytes <= SMALL_BLOB), key=lambda d: d.size_bytes)
            large = [d for d in digests if d.size_bytes > SMALL_BLOB]
            results = await asyncio.gather(
                *(self._fetch_small(group, source) for group in _groups(small)),
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
            for digest, future in futures.items():
                self._inflight.pop(digest, None)
                future.set_result(None)  # waiters re-check the index themselves

    async def _fetch_small(self, digests: list[Digest], source: BlobStore) -> None:
        found = await source.get_many(digests)
        missing = [d for d in digests if d not in found]
        items = [(d, found[d]) for d in digests if d in found]
        await asyncio.to_thread(self._store_verified, items)
        for digest, data in items:
            self._add((digest, False), len(data))
        if missing:
            raise MissingBlobs(missing, "input blobs")

    def _store_verified(self, items: list[tuple[Digest, bytes]]) -> None:
        for digest, data in items:
            if len(data) != digest.size_bytes or _hex_digest(digest, data) != digest.hash:
                try:
                    verify_bytes(digest, data)
                except ReapiError as err:
                    raise Internal(f"the CAS returned corrupt content for input {digest}: {err.message}") from None
            self._write_file(self.path_of(digest, False), data, False)

    async def _fetch_large(self, digest: Digest, source: BlobStore) -> None:
        """Stream one large blob to a temp file, hashing as it goes, then rename it in."""
        tmp = self._tmp / uuid.uuid4().hex
        hasher = digest.algorithm.new()
        size = 0

        def write(f: BinaryIO, chunk: bytes) -> None:
            hasher.update(chunk)
            f.write(chunk)

        try:
            with open(tmp, "wb") as f:
                async for chunk in source.read(digest):
                    size += len(chunk)
                    await asyncio.to_thread(write, f, chunk)
            if size != digest.size_bytes or hasher.hexdigest() != digest.hash:
                raise Internal(f"the CAS returned corrupt content for input {digest} ({size} bytes received)")
            os.chmod(tmp, MODE[False])
            rename_into(tmp, self.path_of(digest, False))
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, NotFound):
                raise MissingBlobs([digest], "input blobs") from None
            raise
        self._add((digest, False), size)

    async def _copy_modes(self, keys: list[CacheKey]) -> None:
        """Make the other-mode copy of blobs already cached in one mode."""
        sources = [(d, not x) for d, x in keys]

        def copy_all() -> None:
            for digest, executable in keys:
                source = self.path_of(digest, not executable)
                tmp = self._tmp / uuid.uuid4().hex
                shutil.copyfile(source, tmp)
                os.chmod(tmp, MODE[executable])
                rename_into(tmp, self.path_of(digest, executable))

        self._pin(sources)
        try:
            await asyncio.to_thread(copy_all)
        finally:
            self._unpin(sources)
        for digest, executable in keys:
            self._add((digest, executable), digest.size_bytes, fetched=False)

    def _write_file(self, path: str, data: bytes, executable: bool) -> None:
        """Create a cache file (blocking).

        Written in place with O_EXCL, which costs half of temp file + rename: nobody
        reads it before the index lists it, and a file cut short by a crash has the
        wrong size, which the startup scan removes. A file already there (not in the
        index) may be linked into an exec root, so it is replaced atomically, never
        rewritten.
        """
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE[executable])
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE[executable])
        except FileExistsError:
            tmp = str(self._tmp / uuid.uuid4().hex)
            self._write_file(tmp, data, executable)
            os.rename(tmp, path)
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)

    # -- adding outputs and bookkeeping ---------------------------------------------------

    def adopt(self, source: Path, digest: Digest, executable: bool) -> bool:
        """Hardlink a finished output into the cache (blocking; call in a thread).

        Outputs of one action are often inputs of the next; taking them costs a link.
        The caller must not change ``source`` afterwards (exec roots are deleted).
        """
        key = (digest, executable)
        if key in self._lru:
            return False
        tmp = self._tmp / uuid.uuid4().hex
        try:
            os.link(source, tmp)
            info = os.lstat(tmp)
            if info.st_uid != os.geteuid() or info.st_gid != os.getegid():
                # The action user's file: the cache takes it only as its own (root can).
                os.chown(tmp, os.geteuid(), os.getegid())
            os.chmod(tmp, MODE[executable])
            rename_into(tmp, self.path_of(digest, executable))
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True

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


def _size(size: int) -> int:
    return size


def _groups(digests: list[Digest]) -> Iterable[list[Digest]]:
    group: list[Digest] = []
    total = 0
    for digest in digests:
        if group and (total + digest.size_bytes > BATCH_BYTES or len(group) >= BATCH_BLOBS):
            yield group
            group, total = [], 0
        group.append(digest)
        total += digest.size_bytes
    if group:
        yield group


def _hex_digest(digest: Digest, data: bytes) -> str:
    hasher = digest.algorithm.new()
    hasher.update(data)
    return hasher.hexdigest()
