"""A directory built once and kept between test runs, never seen half-built.

    root = cached_directory(Path(tempfile.gettempdir()) / "reapi-arm64-rootfs-3f2a", build_rootfs)

``build(staging)`` fills a fresh staging directory beside the final one; only when it
returns is the staging directory renamed to the final name (a rename is atomic on one
filesystem). So a build that is killed or fails leaves at most a ``<name>.building-*``
directory, which no later run trusts: the next builder removes it. An exclusive
``flock`` on ``<name>.lock`` makes concurrent test sessions (several checkouts on one
machine) wait for one build instead of building the same thing twice; the kernel
drops the lock when its holder dies, so a killed build never blocks the next.

Each use touches the directory's mtime, so ``prune_unused`` can remove caches of older
keys that no run has used for a while (a shared machine would otherwise keep every
rootfs an old recipe ever built).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

STAGING_INFIX = ".building-"


def cached_directory(final: Path, build: Callable[[Path], None]) -> Path:
    """``final`` if a complete build is there; else build it (once, under a lock) and return it."""
    if final.is_dir():
        os.utime(final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():  # another session finished it while we waited
            return final
        remove_abandoned_builds(final)
        staging = final.parent / f"{final.name}{STAGING_INFIX}{os.getpid()}"
        staging.mkdir()
        try:
            build(staging)
            os.rename(staging, final)
        except BaseException:
            remove_tree(staging)
            raise
    return final


def prune_unused(parent: Path, prefix: str, keep: Path, unused_for_s: float) -> list[Path]:
    """Remove the caches named ``prefix*`` other than ``keep`` that were not used for
    ``unused_for_s`` seconds and that nobody is building; return what was removed."""
    removed = []
    for candidate in sorted(parent.glob(f"{prefix}*")):
        if candidate == keep or candidate.suffix == ".lock" or STAGING_INFIX in candidate.name:
            continue
        if not candidate.is_dir() or time.time() - candidate.stat().st_mtime < unused_for_s:
            continue
        with open(parent / f"{candidate.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            remove_tree(candidate)
            removed.append(candidate)
    return removed


def remove_abandoned_builds(final: Path) -> None:
    """Staging directories of builds that died (call only while holding the lock)."""
    for leftover in final.parent.glob(f"{final.name}{STAGING_INFIX}*"):
        remove_tree(leftover)


def remove_tree(path: Path) -> None:
    """Delete a tree, including read-only directories (a Debian rootfs has some)."""
    if not path.exists() and not path.is_symlink():
        return

    def make_writable_and_retry(function: Callable[[str], object], name: str, _exc: object) -> None:
        os.chmod(os.path.dirname(name), 0o755)
        function(name)

    shutil.rmtree(path, onerror=make_writable_and_retry)  # onexc is 3.12+
