"""Where a DiskStore keeps each value, and how it finds them all again at open.

    root/
      .reapi-disk-store                    marker holding the layout version
      .lock                                flock held by the one process using the store
      tmp/                                 values being written; leftovers of a crash
      sha256/ab/<hash>-<size>              a value as long as its digest says (every CAS blob)
      sha256/ab/<hash>-<size>-<length>     a value of another length (action cache entries)

The value's expected length is part of its file name. That is what keeps a
truncated file from ever being served: a crash can persist a rename before the
data (ext4 and XFS with delayed allocation leave such files short or empty), and a
file whose size differs from the length in its name is dropped at open and at read.
Shards are the first two hex digits of the hash: 256 directories per function keep
directory sizes modest up to millions of blobs.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

from cas.digest import ALGORITHMS, Digest

LAYOUT_MARKER = ".reapi-disk-store"
LAYOUT_VERSION = "reapi disk store layout 1\n"
LOCK_FILE = ".lock"
TMP_DIR = "tmp"

_DIR_OF_FUNCTION = {f: a.name for f, a in ALGORITHMS.items()}
_FUNCTION_OF_DIR = {a.name: f for f, a in ALGORITHMS.items()}
_NAME_PATTERNS = {
    f: re.compile(rf"([0-9a-f]{{{a.hex_length}}})-(\d+)(?:-(\d+))?") for f, a in ALGORITHMS.items()
}


def value_name(digest: Digest, length: int) -> str:
    """The file name of a value; the length is spelled out only when it differs."""
    if length == digest.size_bytes:
        return f"{digest.hash}-{length}"
    return f"{digest.hash}-{digest.size_bytes}-{length}"


def value_path(root: str, digest: Digest, length: int) -> str:
    """The absolute path of a value (strings, not Path objects: this is a hot path)."""
    h = digest.hash
    if length == digest.size_bytes:
        return f"{root}/{_DIR_OF_FUNCTION[digest.function]}/{h[:2]}/{h}-{length}"
    return f"{root}/{_DIR_OF_FUNCTION[digest.function]}/{h[:2]}/{h}-{digest.size_bytes}-{length}"


@dataclass(frozen=True)
class FoundValue:
    """One value file seen by the scan."""

    digest: Digest
    length: int
    mtime_ns: int
    path: str


@dataclass
class ScanResult:
    values: list[FoundValue] = field(default_factory=list)
    # Files removed because their size did not match their name (crash truncation).
    truncated: list[str] = field(default_factory=list)
    # Older copies of a value whose length changed, left behind by a crash mid-overwrite.
    superseded: list[str] = field(default_factory=list)
    temp_files_removed: int = 0


def clean_temp_dir(root: str) -> int:
    """Remove everything in root/tmp (a crash's half-written values); return how many."""
    tmp = os.path.join(root, TMP_DIR)
    os.makedirs(tmp, exist_ok=True)
    removed = 0
    with os.scandir(tmp) as entries:
        for entry in entries:
            try:
                os.unlink(entry.path)
            except IsADirectoryError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except FileNotFoundError:
                continue
            removed += 1
    return removed


def _shard_dirs(root: str) -> Iterator[tuple[int, str]]:
    with os.scandir(root) as tops:
        for top in tops:
            function = _FUNCTION_OF_DIR.get(top.name)
            if function is None or not top.is_dir(follow_symlinks=False):
                continue
            with os.scandir(top.path) as shards:
                for shard in shards:
                    if len(shard.name) == 2 and shard.is_dir(follow_symlinks=False):
                        yield function, shard.path


def _scan_shard(function: int, shard: str) -> tuple[list[FoundValue], list[str]]:
    """Stat every value in one shard directory; remove (and list) those whose size is wrong."""
    match = _NAME_PATTERNS[function].fullmatch
    found: list[FoundValue] = []
    truncated: list[str] = []
    with os.scandir(shard) as entries:
        for entry in entries:
            m = match(entry.name)
            if m is None:
                continue  # not ours; leave it alone
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            hash_hex, size_text, length_text = m.groups()
            size = int(size_text)
            length = size if length_text is None else int(length_text)
            if st.st_size != length:
                _unlink_quietly(entry.path)
                truncated.append(entry.path)
                continue
            found.append(FoundValue(Digest(hash_hex, size, function), length, st.st_mtime_ns, entry.path))
    return found, truncated


def scan_values(root: str, executor: Executor) -> ScanResult:
    """Find every stored value, oldest access first. Runs in a thread; stats shards in parallel.

    Removes truncated files and, where a value exists under two lengths (a crash
    between the rename and the unlink of an overwrite), keeps the newer one.
    """
    result = ScanResult()
    futures = [executor.submit(_scan_shard, f, shard) for f, shard in _shard_dirs(root)]
    newest: dict[Digest, FoundValue] = {}
    for future in futures:
        found, truncated = future.result()
        result.truncated.extend(truncated)
        for value in found:
            other = newest.get(value.digest)
            if other is not None:
                older, value = sorted((other, value), key=lambda v: v.mtime_ns)
                _unlink_quietly(older.path)
                result.superseded.append(older.path)
            newest[value.digest] = value
    result.values = sorted(newest.values(), key=lambda v: v.mtime_ns)
    return result


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
