"""The worker's disk: when an action filled it, and how much an exec root takes.

An action may fill the filesystem its exec root and ``/tmp`` live on. The worker
then fails it with RESOURCE_EXHAUSTED naming the place and the sizes, removes its
files before reporting (so the space is free for the next action), offers none of
its outputs to the cache, and, if the disk is still short, evicts cache files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from cas.errors import ResourceExhausted
from worker.sandbox.limits import size_text

# Less than this free after an action means it ran out of space (a write that needs a
# block more than is left fails with ENOSPC).
FULL_BELOW = 1 << 20
# Outputs are offered to the cache (hardlinked, keeping their blocks) only while at
# least this share of the disk is free.
ADOPT_ABOVE_SHARE = 0.10


@dataclass(frozen=True)
class DiskSpace:
    path: Path
    total: int
    free: int  # what an unprivileged writer may still use

    @property
    def full(self) -> bool:
        return self.free < FULL_BELOW

    @property
    def roomy(self) -> bool:
        return self.free >= self.total * ADOPT_ABOVE_SHARE

    def shortfall(self) -> int:
        """Bytes to free until outputs may be cached again."""
        return max(0, int(self.total * ADOPT_ABOVE_SHARE) - self.free)


def disk_space(path: Path) -> DiskSpace:
    info = os.statvfs(path)
    return DiskSpace(path, info.f_blocks * info.f_frsize, info.f_bavail * info.f_frsize)


def tree_bytes(path: Path) -> int:
    """The disk blocks a directory tree holds (blocking; never follows symlinks)."""
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total


def disk_filled(space: DiskSpace, action_bytes: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the worker's disk filled up while the action ran: {space.path} has {size_text(space.free)} free of "
        f"{size_text(space.total)}, and the action's files there took {size_text(action_bytes)}; they were removed")


def worker_disk_full(space: DiskSpace, exc: OSError) -> str:
    return (f"the worker's disk is full ({exc.filename or space.path}: {size_text(space.free)} free of "
            f"{size_text(space.total)})")


def in_memory(path: Path) -> bool:
    """Whether ``path`` is on a memory filesystem (tmpfs, ramfs), from /proc/self/mountinfo
    (blocking). There a new file costs the same in any directory; on a disk, a file made
    in a new directory can cost several times one made in a long-lived one (ext4 then
    reads and journals another part of its inode table: docs/BENCHMARKS.md, "Input fetch")."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in lines:
        fields = line.split()
        if "-" not in fields[5:]:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the deepest mount, the latest of equals
            best, kind = point, fields[fields.index("-", 5) + 1]
    return kind in ("tmpfs", "ramfs")


def remove_tree(path: Path) -> None:
    """rm -rf, also through directories the action made read-only (blocking)."""
    def make_writable_and_retry(function, failed_path, _exc_info):  # type: ignore[no-untyped-def]
        parent = os.path.dirname(failed_path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, stat.S_IRWXU)
            function(failed_path)
        except FileNotFoundError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)
