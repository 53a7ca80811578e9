"""A server that starts on a full disk says so, and serves what it has.

The local stores open on a full disk (cas/packed/startup.py skips what only saves
time at the next open) and serve reads; each write then fails with
RESOURCE_EXHAUSTED naming the store and the path, and succeeds again as soon as
space returns, without a restart. This check only makes the situation visible at
start: one warning per store whose directory has (almost) no space left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cas.store import BlobStore

log = logging.getLogger("reapi.server")

# Less than this free: writes of anything but the smallest values will fail.
FULL_BELOW = 1 << 20


def _size(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value} bytes"


def full_disks(stores: Mapping[str, BlobStore]) -> list[str]:
    """One line per local store whose disk is full (blocking: a statvfs each)."""
    lines = []
    for name, store in stores.items():
        root = getattr(store, "root", None)
        if not isinstance(root, (str, Path)):
            continue
        try:
            info = os.statvfs(root)
        except OSError:
            continue
        free, total = info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize
        if free < FULL_BELOW:
            lines.append(f"store {name!r}: its disk is full ({root}: {_size(free)} free of {_size(total)}); it "
                         "serves reads, and writes fail with RESOURCE_EXHAUSTED until space returns")
    return lines


def warn_of_full_disks(stores: Mapping[str, BlobStore]) -> None:
    for line in full_disks(stores):
        log.warning("%s", line)
