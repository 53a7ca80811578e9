"""InputPlacer: an action's input files written once, in place, as their blobs arrive.

Why: a cold action used to wait until every blob had been written into the FileCache
before the first file went into its exec root, one thread job per phase, and paid a
cache write plus a link per file. Now where each blob goes is planned and the
directories are made (``start``) while the first batch of blobs is on the wire, and
each batch, in the thread job that verified it
(``FileCache.ensure(..., placer)``), is written straight to where the action wants
it. What was cached already (or arrived another way: a large blob, another lease's
fetch, a copy in the other mode) is placed from the cache by ``finish``.

How a fetched file also enters the cache (issue 10's guarantees: the action can
change neither its inputs nor the cache's copy):
- in a tree to mount (worker/input_trees.py: worker-owned directories no action can
  write in, mounted read-only) on a memory filesystem, the file is written there,
  owned by the worker and read-only, and the cache adopts it later (``deferred``,
  linked by ``FileCache.adopt_later`` once the action's inputs are all in place):
  no link on the input path. On a disk it goes into the cache first, as below: a
  file made in a new directory there can cost several times one made in the cache's
  long-lived ones;
- in an exec root where inputs are links (the action runs as another, unprivileged
  user), the file is written into the cache (where only the worker can reach it)
  and linked into place, before the action exists: one write and one link, as a
  file linked from a warm cache;
- where inputs are copies (the action could write them), the cache gets its own
  file and the exec root a copy written from memory, not copied back from disk.
Other paths wanting the same blob link to the first one (copies: written again).

Several batch jobs may place at once (each on its own thread): directory descriptors
are opened once under a lock, every other structure is only read or added to. A job
still running when the action is cancelled keeps the descriptors open until it ends
(a descriptor closed under it could be reused for another directory).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cas.digest import Digest
from worker.cache_files import CacheKey, link_or_copy, write_cache_file
from worker.input_layout import InputLayout

_MODES = {False: 0o444, True: 0o555}
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL

Place = tuple["Target", str, str]  # (target, directory path, name)


@dataclass(frozen=True)
class Target:
    """One tree to create: ``root`` must be new, or an empty directory."""

    root: str
    layout: InputLayout
    copy: bool = False  # copies instead of links to the cache
    owner: tuple[int, int] | None = None  # (uid, gid) its directories must belong to
    # The worker's, never writable by an action (a tree to mount), on a memory filesystem:
    # fetched files are written here first and the cache adopts them later.
    in_place: bool = False


class InputPlacer:
    """Creates ``targets``; ``source_of`` names cache files, ``tmp_dir`` is the cache's
    temp directory (blocking methods run on threads)."""

    def __init__(self, targets: Iterable[Target], source_of: Callable[[Digest, bool], str], tmp_dir: str) -> None:
        self.targets = list(targets)
        self._source_of = source_of
        self._tmp_dir = tmp_dir
        # Where each cache key goes (``_plan``: made while the first blobs are on the wire).
        self._places: dict[CacheKey, list[Place]] | None = None
        self.placed: set[CacheKey] = set()
        self.deferred: list[tuple[CacheKey, str]] = []  # written in place, for the cache to adopt
        # Roots of in-place targets on the cache's filesystem (the cache adopts by a link):
        # fetched files are written there only.
        self._in_place: set[str] = set()
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._jobs = 0  # blocking calls using the descriptors right now
        self._closed = False
        self._directories: asyncio.Future[None] | None = None
        self._unmade = False  # ``start_here``: the first blocking job makes the directories

    def _plan(self) -> dict[CacheKey, list[Place]]:
        """Where each cache key goes; places where a link will do come first. Made once,
        before any thread job uses it (``start``, or ``finish`` when nothing was fetched)."""
        if self._places is not None:
            return self._places
        places: dict[CacheKey, list[Place]] = {}
        for target in sorted(self.targets, key=lambda t: t.copy):
            root = target.root
            directories: dict[str, str] = {"": root}  # each directory's path made once
            for digest, executable, path in target.layout.files:
                parent, _, name = path.rpartition("/")
                directory = directories.get(parent)
                if directory is None:
                    directory = directories[parent] = f"{root}/{parent}"
                key = (digest, executable)
                where = places.get(key)
                if where is None:
                    places[key] = [(target, directory, name)]
                else:
                    where.append((target, directory, name))
        self._places = places
        return places

    # -- on the event loop ------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._directories is not None

    def start(self) -> None:
        """Plan where each blob goes and make the directories on a thread: called once the
        blobs are asked for, so both happen while they are on the wire."""
        if self._directories is None:
            self._plan()
            self._directories = asyncio.ensure_future(asyncio.to_thread(self._make_directories))

    def start_here(self) -> None:
        """Plan now, and leave the directories to the first thread job that places files
        (``stored``, ``finish``): for blobs at hand already, one thread job, not two."""
        if self._directories is None:
            self._plan()
            self._unmade = True
            self._directories = asyncio.get_running_loop().create_future()
            self._directories.set_result(None)

    async def ready(self) -> None:
        """The directories exist (``start``ed if it was not)."""
        self.start()
        assert self._directories is not None
        await asyncio.shield(self._directories)

    async def close(self) -> None:
        """No more placing: the directory descriptors go as soon as no thread job uses them."""
        if self._directories is not None:
            await asyncio.gather(self._directories, return_exceptions=True)
        with self._lock:
            self._closed = True
            if not self._jobs:
                self._close_fds()

    # -- blocking --------------------------------------------------------------------------------

    def stored(self, blobs: Iterable[tuple[CacheKey, bytes]]) -> set[CacheKey]:
        """Write these verified blobs where they go, and into the cache now, except those
        returned: written in place only, for the cache to adopt later (``deferred``)."""
        places = self._plan()
        deferred = self.deferred
        before = len(deferred)
        placed = self.placed
        fds = self._fds
        in_place = self._in_place
        with self._job():
            self._make_unmade()
            for key, data in blobs:
                where = places.get(key)
                if where is None:
                    write_cache_file(self._source_of(*key), data, key[1], self._tmp_dir)
                    continue
                target, directory, name = where[0]
                if len(where) == 1 and target.root in in_place:  # the common case, without a call per file
                    dir_fd = fds.get(directory)
                    try:
                        if dir_fd is None:
                            dir_fd = self._dir_fd(directory)
                        write_at(name, dir_fd, data, key[1])
                    except OSError as exc:
                        raise _named(exc, directory, name)
                    deferred.append((key, f"{directory}/{name}"))
                else:
                    self._write(key, where, data)
                placed.add(key)
        return {key for key, _ in deferred[before:]}

    def finish(self) -> None:
        """Every file not placed yet (all of them, warm) from the cache, then the symlinks."""
        if self._directories is None:
            self._make_directories()
        placed = self.placed
        places = self._plan()
        with self._job():
            self._make_unmade()
            if len(placed) < len(places):  # (placed: keys of ``places`` only) not all fetched now
                for key, where in places.items():
                    if key not in placed:
                        self._link(key, where)
        for target in self.targets:
            for path, link in target.layout.symlinks:
                os.symlink(link, f"{target.root}/{path}")

    def _make_unmade(self) -> None:
        if self._unmade:
            with self._lock:
                if self._unmade:
                    self._make_directories()
                    self._unmade = False

    def _make_directories(self) -> None:
        cache_disk = os.stat(self._tmp_dir).st_dev
        for target in self.targets:
            root = target.root
            try:
                os.mkdir(root)
            except FileExistsError:
                if os.listdir(root):  # made empty for us (a sandbox bound it already): never reused
                    raise FileExistsError(f"the exec root {root} is not empty") from None
            if target.in_place and os.stat(root).st_dev == cache_disk:
                self._in_place.add(root)
            directories = target.layout.directories
            for path in directories:
                os.mkdir(f"{root}/{path}")
            if target.owner is not None:
                uid, gid = target.owner
                os.chown(root, uid, gid)
                for path in directories:
                    os.chown(f"{root}/{path}", uid, gid)

    def _write(self, key: CacheKey, where: list[Place], data: bytes) -> None:
        """A fetched blob, written at its first place and linked (or copied) to the others."""
        executable = key[1]
        first, directory, name = where[0]
        try:
            dir_fd = self._dir_fd(directory)
            if first.root in self._in_place:
                write_at(name, dir_fd, data, executable)
                self.deferred.append((key, f"{directory}/{name}"))
            else:
                # Into the cache first (a directory only the worker can reach), then into
                # place: no moment where anyone else could swap the file the cache takes.
                source = self._source_of(*key)
                write_cache_file(source, data, executable, self._tmp_dir)
                if first.copy:  # the action may write its copy: the cache keeps its own
                    write_at(name, dir_fd, data, executable)
                else:
                    try:
                        os.link(source, name, dst_dir_fd=dir_fd)
                    except OSError:  # another filesystem, too many links
                        link_or_copy(source, f"{directory}/{name}", executable)
        except OSError as exc:
            raise _named(exc, directory, name)
        for target, other_directory, other_name in where[1:]:
            try:
                other_fd = self._dir_fd(other_directory)
                if target.copy:
                    write_at(other_name, other_fd, data, executable)
                else:
                    os.link(name, other_name, src_dir_fd=dir_fd, dst_dir_fd=other_fd)
            except OSError as exc:
                raise _named(exc, other_directory, other_name)

    def _link(self, key: CacheKey, where: list[Place]) -> None:
        """Links (or copies) of one cache file at every place that wants it."""
        source = self._source_of(*key)
        for target, directory, name in where:
            try:
                dir_fd = self._dir_fd(directory)
                if target.copy:
                    copy_at(source, name, dir_fd, key[1])
                    continue
                try:
                    os.link(source, name, dst_dir_fd=dir_fd)
                except OSError:
                    link_or_copy(source, f"{directory}/{name}", key[1])  # raises what a copy cannot fix
            except OSError as exc:
                raise _named(exc, directory, name)

    def _dir_fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        return fd

    @contextmanager
    def _job(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the input placer is closed")
            self._jobs += 1
        try:
            yield
        finally:
            with self._lock:
                self._jobs -= 1
                if self._closed and not self._jobs:
                    self._close_fds()

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _named(exc: OSError, directory: str, name: str) -> OSError:
    """The error naming the whole path (a full disk is reported with it), not one component."""
    if exc.filename in (None, name):
        exc.filename = f"{directory}/{name}"
    return exc


def write_at(name: str, dir_fd: int, data: bytes, executable: bool) -> None:
    """A new file with ``data`` in an open directory (blocking); nothing is left of it if that fails."""
    fd = os.open(name, _NEW_FILE, _MODES[executable], dir_fd=dir_fd)
    try:
        written = os.write(fd, data)
        if written < len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)


def copy_at(source: str, name: str, dir_fd: int, executable: bool) -> None:
    """Copy a file into an open directory (blocking)."""
    source_fd = os.open(source, os.O_RDONLY)
    try:
        target = os.open(name, _NEW_FILE, _MODES[executable], dir_fd=dir_fd)
        try:
            left = os.fstat(source_fd).st_size
            try:
                while left > 0:
                    copied = os.copy_file_range(source_fd, target, left)
                    if copied == 0:
                        break
                    left -= copied
            except OSError:  # no copy_file_range between these two: copy through memory
                while chunk := os.read(source_fd, 1 << 20):
                    os.write(target, chunk)
        finally:
            os.close(target)
    finally:
        os.close(source_fd)
