"""Notice that a file was replaced or rewritten, cheaply enough to ask on every call
(the server's token, JWKS and certificate files; the worker's token file).

Token files, JWKS files and certificates are rotated by writing them in place or by
renaming a new file over the old one; either changes the signature below (inode,
size, modification and change times in nanoseconds). One ``stat`` costs about a
microsecond, so readers ask before each use instead of running a polling task.
"""

from __future__ import annotations

import os
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
    """``changed()`` is true once per new version of the files (and on the first call)."""

    __slots__ = ("paths", "_seen")

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._seen: tuple[Signature | None, ...] | None = None

    def current(self) -> tuple[Signature | None, ...]:
        return tuple(signature_of(p) for p in self.paths)

    def changed(self) -> bool:
        now = self.current()
        if now == self._seen:
            return False
        self._seen = now
        return True
