"""A small tmpfs mounted for a test, so a full disk is real (ENOSPC from the kernel)
without filling the machine's. The suite runs as root (`make test`), which mounting needs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs_disk(path: Path, size: str, mode: str | None = None) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "64m") on the new directory ``path`` until the block ends."""
    path.mkdir()
    options = f"size={size}" + (f",mode={mode}" if mode else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "reapi-test-disk", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
