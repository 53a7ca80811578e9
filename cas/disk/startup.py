"""Opening and closing a DiskStore's directory: lock, layout check, index rebuild, snapshot.

These run in a thread (they touch every file at open) and return plain values the
DiskStore constructor takes, so the store itself does no I/O when it is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any

from cas.digest import Digest
from cas.localfs.directory_lock import claim_layout, lock_directory as lock_shared_directory
from cas.disk.index import IndexEntry
from cas.disk.layout import LAYOUT_MARKER, LAYOUT_VERSION
from cas.disk.scan import scan_index
from cas.disk.snapshot import current_boot_id, index_from_snapshot, take_snapshot, write_snapshot

log = logging.getLogger("reapi.cas.disk")


def lock_directory(root: str, name: str) -> int:
    """Lock ``root`` for this process (cas/localfs/directory_lock.py); return the lock's fd."""
    return lock_shared_directory(root, f"disk store {name!r}")


def check_layout(root: str, name: str) -> None:
    """Mark a new directory with our layout version; refuse one with another."""
    claim_layout(root, LAYOUT_MARKER, LAYOUT_VERSION, f"disk store {name!r}")


def open_directory(root: str, executor: Executor, name: str) -> tuple[int, OrderedDict[Digest, IndexEntry], str]:
    """Lock, check the layout and rebuild the index: (lock fd, index, note for the log)."""
    lock_fd = lock_directory(root, name)
    try:
        check_layout(root, name)
        snapshot = take_snapshot(root, current_boot_id())
        if snapshot is not None:
            index, report = index_from_snapshot(root, snapshot, IndexEntry)
        else:
            index, report = scan_index(root, executor, IndexEntry)
    except BaseException:
        os.close(lock_fd)
        raise
    for path in report.truncated_removed:
        log.warning("disk store %r: removed truncated value %s (left by a crash)", name, path)
    how = "from the snapshot" if snapshot is not None else "by a full scan"
    notes = report.notes()
    return lock_fd, index, f"{how}; {notes}" if notes else how


def save_snapshot(root: str, entries: list[tuple[Digest, IndexEntry]]) -> None:
    """At a clean close: write the index so the next open can skip the full scan."""
    write_snapshot(root, ((d, e.length, e.stamp) for d, e in entries), current_boot_id())


def release_opened(opening: asyncio.Future[Any], executor: Executor) -> None:
    """Undo an open whose caller went away (or that failed): unlock, stop the threads."""
    executor.shutdown(wait=False)
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result()[0])
