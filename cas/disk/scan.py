"""Rebuilding a DiskStore's index at open by looking at every value file.

The files are the only truth: there is no journal or database that could disagree
with them. Each file's name gives its digest and expected length (layout.py),
and ``stat`` gives its real size, to drop values a crash truncated, and its mtime,
the last recorded access, to restore the LRU order. Shards are scanned by parallel
threads; ``stat`` releases the GIL.

Also cleans up after a crash: temp files are removed, and where one key is stored
under two lengths (a crash between an overwrite's rename and its unlink) the newer
file wins.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from cas.digest import Digest
from cas.disk.layout import TEMP_PREFIX, gc_paused, parse_name, shard_dirs, unlink_quietly, value_path

E = TypeVar("E")

# A value seen on disk: (mtime in ns, digest, length).
Seen = tuple[int, Digest, int]


@dataclass
class ScanReport:
    """What the scan found and removed, for the log line at open."""

    values: int = 0
    temp_files_removed: int = 0
    truncated_removed: list[str] = field(default_factory=list)
    superseded_removed: list[str] = field(default_factory=list)

    def notes(self) -> str:
        parts = [
            f"{self.temp_files_removed} unfinished temp files removed" if self.temp_files_removed else "",
            f"{len(self.truncated_removed)} truncated values removed" if self.truncated_removed else "",
            f"{len(self.superseded_removed)} superseded values removed" if self.superseded_removed else "",
        ]
        return "; ".join(p for p in parts if p)


def _scan_shard(function: int, shard: str) -> tuple[list[Seen], list[str], int]:
    """Stat the values of one shard: (values, truncated paths removed, temp files removed)."""
    seen: list[Seen] = []
    truncated: list[str] = []
    temps = 0
    with os.scandir(shard) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(TEMP_PREFIX):
                unlink_quietly(entry.path)
                temps += 1
                continue
            named = parse_name(function, name)
            if named is None:
                continue  # not ours: leave it alone
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_size != named[1]:
                unlink_quietly(entry.path)
                truncated.append(entry.path)
                continue
            seen.append((st.st_mtime_ns, named[0], named[1]))
    return seen, truncated, temps


def scan_index(
    root: str, executor: Executor, make_entry: Callable[[int, float], E]
) -> tuple[OrderedDict[Digest, E], ScanReport]:
    """The index (digest -> make_entry(length, stamp seconds)), oldest access first."""
    with gc_paused():
        return _scan_index(root, executor, make_entry)


def _scan_index(
    root: str, executor: Executor, make_entry: Callable[[int, float], E]
) -> tuple[OrderedDict[Digest, E], ScanReport]:
    report = ScanReport()
    futures = [executor.submit(_scan_shard, function, shard) for function, shard in shard_dirs(root)]
    seen: list[Seen] = []
    for future in futures:
        values, truncated, temps = future.result()
        seen.extend(values)
        report.truncated_removed.extend(truncated)
        report.temp_files_removed += temps
    seen.sort(key=_mtime)
    index: OrderedDict[Digest, E] = OrderedDict()
    lengths: dict[Digest, int] = {}
    for mtime_ns, digest, length in seen:
        older = lengths.get(digest)
        if older is not None:  # the same key under two lengths: the newer one wins
            path = value_path(root, digest, older)
            unlink_quietly(path)
            report.superseded_removed.append(path)
            del index[digest]
        lengths[digest] = length
        index[digest] = make_entry(length, mtime_ns / 1e9)
    report.values = len(index)
    return index, report


def _mtime(seen: Seen) -> int:
    return seen[0]
