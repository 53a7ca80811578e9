"""The FileCache's files on disk: their names, the start-up scan, verification.

One file per blob and mode, ``<root>/<function>/<hh>/<hash>-<size>[-x]``, read-only
and owned by the worker. These helpers block (the cache calls them on threads),
except ``stream_into_cache``, which hands its writes to threads itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from operator import attrgetter, itemgetter, methodcaller
from pathlib import Path
from typing import BinaryIO

from cas.digest import ALGORITHMS, Digest, algorithm_named
from cas.errors import Internal, ReapiError
from cas.store import BlobStore
from cas.decorators.verify import verify_bytes

# (digest, executable): one cache file.
CacheKey = tuple[Digest, bool]

MODE = {False: 0o444, True: 0o555}
CLEAN_MARKER = ".clean"
_LINK_FALLBACK_ERRNOS = {errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES, errno.ENOTSUP}


def cache_name(digest: Digest, executable: bool) -> str:
    return f"{digest.hash}-{digest.size_bytes}{'-x' if executable else ''}"


def parse_cache_name(function_name: str, name: str) -> CacheKey | None:
    algorithm = algorithm_named(function_name)
    parts = name.split("-")
    if algorithm is None or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "x"):
        return None
    try:
        return Digest.parse(parts[0], int(parts[1]), algorithm.function), len(parts) == 3
    except (ValueError, ReapiError):
        return None


def rename_into(tmp: Path, path: str) -> None:
    """Rename, creating the two-level fan-out directory the first time it is needed."""
    try:
        os.rename(tmp, path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.rename(tmp, path)


def write_cache_file(path: str, data: bytes, executable: bool, tmp_dir: str) -> None:
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
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}"
        write_cache_file(tmp, data, executable, tmp_dir)
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


def link_into_cache(source: str, path: str, tmp_dir: str) -> None:
    """Give a finished file the cache name ``path`` (blocking): a file already there
    (not in the index) is replaced atomically, never rewritten."""
    try:
        os.link(source, path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.link(source, path)
    except FileExistsError:
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}"
        os.link(source, tmp)
        os.rename(tmp, path)


async def stream_into_cache(digest: Digest, source: BlobStore, tmp: Path, path: str) -> int:
    """Stream a blob to the temp file ``tmp``, hashing as it goes, then rename it to the
    cache name ``path``; its size. INTERNAL if the content is not the blob's."""
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
        rename_into(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def link_all_into_cache(files: Iterable[tuple[CacheKey, str]], path_of: Callable[[Digest, bool], str],
                        tmp_dir: str) -> list[CacheKey]:
    """Link finished files into the cache; the keys that made it (a file gone is skipped)."""
    linked = []
    for key, path in files:
        try:
            link_into_cache(path, path_of(*key), tmp_dir)
        except OSError:
            continue
        linked.append(key)
    return linked


def take_output(source: Path, path: str, executable: bool, tmp_dir: str) -> bool:
    """Hardlink an action's output to the cache name ``path`` as the worker's own,
    read-only file; False if it cannot be taken."""
    tmp = f"{tmp_dir}/{uuid.uuid4().hex}"
    try:
        os.link(source, tmp)
        info = os.lstat(tmp)
        if info.st_uid != os.geteuid() or info.st_gid != os.getegid():
            # The action user's file: the cache takes it only as its own (root can).
            os.chown(tmp, os.geteuid(), os.getegid())
        os.chmod(tmp, MODE[executable])
        rename_into(Path(tmp), path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        return False
    return True


def copy_modes(keys: Iterable[CacheKey], path_of: Callable[[Digest, bool], str], tmp_dir: str) -> None:
    """Copy cache files into their other mode (``keys``: the modes wanted)."""
    for digest, executable in keys:
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}"
        shutil.copyfile(path_of(digest, not executable), tmp)
        os.chmod(tmp, MODE[executable])
        rename_into(Path(tmp), path_of(digest, executable))


def batches_of(digests: list[Digest], max_bytes: int, max_blobs: int) -> Iterable[list[Digest]]:
    """Consecutive groups of at most ``max_blobs`` blobs and ``max_bytes`` bytes (one blob at least)."""
    if digests and len(digests) <= max_blobs and sum(map(_SIZE_OF, digests)) <= max_bytes:
        yield digests  # one group: no loop per blob
        return
    group: list[Digest] = []
    total = 0
    for digest in digests:
        if group and (total + digest.size_bytes > max_bytes or len(group) >= max_blobs):
            yield group
            group, total = [], 0
        group.append(digest)
        total += digest.size_bytes
    if group:
        yield group


_HASHLIB = frozenset((hashlib.sha256, hashlib.sha1, hashlib.md5, hashlib.sha384, hashlib.sha512))
_KEY, _DATA_OF, _DIGEST_OF = itemgetter(0), itemgetter(1), itemgetter(0)
_FUNCTION, _HASH_OF, _SIZE_OF = attrgetter("function"), attrgetter("hash"), attrgetter("size_bytes")
_HEXDIGEST = methodcaller("hexdigest")


def all_intact(blobs: list[tuple[CacheKey, bytes]]) -> bool:
    """Whether every blob has its digest's size and hash, checked in C-level passes
    (one digest function, one of hashlib's); False: some may not, check one by one."""
    if not blobs:
        return True
    digests = list(map(_DIGEST_OF, map(_KEY, blobs)))
    functions = set(map(_FUNCTION, digests))
    if len(functions) != 1:
        return False
    new = ALGORITHMS[functions.pop()].new
    if new not in _HASHLIB:
        return False
    datas = list(map(_DATA_OF, blobs))
    return (list(map(len, datas)) == list(map(_SIZE_OF, digests))
            and list(map(_HEXDIGEST, map(new, datas))) == list(map(_HASH_OF, digests)))


def check_fetched(blobs: list[tuple[CacheKey, bytes]]) -> None:
    """INTERNAL, naming the input, unless every fetched blob matches its digest."""
    if all_intact(blobs):
        return
    for (digest, _), data in blobs:  # one by one: the precise error
        try:
            verify_bytes(digest, data)
        except ReapiError as err:
            raise Internal(f"the CAS returned corrupt content for input {digest}: {err.message}") from None


def hex_digest(digest: Digest, data: bytes) -> str:
    hasher = digest.algorithm.new()
    hasher.update(data)
    return hasher.hexdigest()


def link_or_copy(source: Path | str, dest: Path | str, executable: bool) -> None:
    """Hardlink ``source`` to ``dest`` (blocking); copy where links are impossible."""
    try:
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in _LINK_FALLBACK_ERRNOS:
            raise
        shutil.copyfile(source, dest)
        os.chmod(dest, MODE[executable])


def file_matches(path: str, digest: Digest) -> bool:
    """Whether the file's content hashes to ``digest`` (blocking)."""
    hasher = digest.algorithm.new()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
    except OSError:
        return False
    return size == digest.size_bytes and hasher.hexdigest() == digest.hash


def open_scan(root: Path) -> tuple[bool, list[tuple[CacheKey, int]]]:
    """(was the last stop clean, the valid files): the marker is consumed, so a crash from
    now on leaves none. The cache is the worker's alone (0700: actions cannot browse it)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    marker = root / CLEAN_MARKER
    clean = marker.exists()
    entries = _scan(root)
    marker.unlink(missing_ok=True)
    return clean, entries


def _scan(root: Path) -> list[tuple[CacheKey, int]]:
    """Create the directory layout and list valid cache files, oldest first."""
    tmp = root / "tmp"
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    found: list[tuple[float, CacheKey, int]] = []
    uid = os.geteuid()
    for algorithm in ALGORITHMS.values():
        base = root / algorithm.name
        if not base.is_dir():
            continue
        for sub in os.scandir(base):
            if not sub.is_dir(follow_symlinks=False):
                continue
            with os.scandir(sub.path) as it:
                for entry in it:
                    key = parse_cache_name(algorithm.name, entry.name)
                    stat = entry.stat(follow_symlinks=False)
                    if (key is None or stat.st_size != key[0].size_bytes or not entry.is_file(follow_symlinks=False)
                            or stat.st_uid != uid or stat.st_mode & 0o222):
                        os.unlink(entry.path)  # stray, truncated, or writable by someone: never serve it
                        continue
                    found.append((stat.st_mtime, key, stat.st_size))
    found.sort(key=lambda item: item[0])
    return [(key, size) for _, key, size in found]


def received(digests: list[Digest], modes: dict[Digest, tuple[bool, ...]], found: dict[Digest, bytes],
             extra: bool) -> tuple[list[Digest], list[tuple[CacheKey, bytes]]]:
    """Of a batch's ``digests``: those ``found`` lacks, and the blobs to write, each in
    every mode wanted (``extra``: ``found`` may hold other blobs too)."""
    missing = [digest for digest in digests if digest not in found] if extra or len(found) < len(digests) else []
    # One comprehension per batch, not a generator per blob: a blob wanted in both modes twice.
    return missing, [((digest, executable), data) for digest in digests if (data := found.get(digest)) is not None
                     for executable in modes[digest]]
