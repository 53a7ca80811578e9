"""Notice that a file was replaced or rewritten, cheaply enough to ask on every call
(the server's token, JWKS and certificate files; the worker's token file).

Token files, JWKS files and certificates are rotated by writing them in place or by
renaming a new file over the old one; either changes the signature below (inode,
size, modification and change times in nanoseconds). One ``stat`` costs a few
microseconds, so readers ask when they use the file (at most every ``min_interval``)
instead of running a polling task.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

Signature = tuple[int, int, int, int]


def signature_of(path: Path) -> Signature | None:
    """None if the file cannot be stat'ed (missing, or a directory on the way is)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileWatch:
    """``changed()`` is true once per new version of the files (and on the first call).

    ``min_interval``: look at the files at most this often (seconds); a reader asked on
    every call of a busy server then pays a clock read, not a ``stat``, per call."""

    __slots__ = ("paths", "min_interval", "_seen", "_next_look")

    def __init__(self, *paths: Path, min_interval: float = 0.0) -> None:
        self.paths = paths
        self.min_interval = min_interval
        self._seen: tuple[Signature | None, ...] | None = None
        self._next_look = 0.0

    def current(self) -> tuple[Signature | None, ...]:
        return tuple(signature_of(p) for p in self.paths)

    def changed(self) -> bool:
        if self.min_interval:
            now = time.monotonic()
            if now < self._next_look:
                return False
            self._next_look = now + self.min_interval
        signatures = self.current()
        if signatures == self._seen:
            return False
        self._seen = signatures
        return True
