"""One process per store directory: an exclusive, non-blocking flock on ``root/.lock``.

Shared by the stores that own a directory (DiskStore, PackedStore), with the layout
marker (`claim_layout`) that keeps one store type from reading another's files. Two stores on
one directory would evict each other's data and disagree about the byte count, so
a second opener, in this process or another, is refused with a message naming the
directory. The lock dies with the process, so a crash never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os

from cas.errors import FailedPrecondition

LOCK_FILE = ".lock"


def lock_directory(root: str, owner: str) -> int:
    """Create ``root`` if needed and lock it for this process; return the lock's fd.

    ``owner`` names the store in messages, e.g. "disk store 'cas'".
    """
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise FailedPrecondition(f"{owner}: cannot use {root}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise FailedPrecondition(
            f"{owner}: {root} is already in use by {holder} "
            f"(it holds the lock on {os.path.join(root, LOCK_FILE)})"
        ) from None
    # The holder's pid, for the message a second opener gets.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    """"process 1234" (this one, or another) if the lock file names it, else a vaguer phrase."""
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if not text.isdigit():
        return "another store or process"
    if int(text) == os.getpid():
        return "another store in this process"
    return f"another process (pid {text})"


def claim_layout(root: str, marker_name: str, version: str, owner: str) -> None:
    """Mark a new store directory with its layout ``version``; refuse one marked otherwise.

    A store that read another layout's files would serve or delete them wrongly, so a
    directory written by another store type or version is refused, naming both.
    """
    marker = os.path.join(root, marker_name)
    try:
        with open(marker) as f:
            found = f.read()
    except FileNotFoundError:
        with open(marker, "w") as f:
            f.write(version)
        return
    if found != version:
        raise FailedPrecondition(
            f"{owner}: {root} holds a different layout ({found.strip()!r}, this version "
            f"reads {version.strip()!r}); point the store at an empty directory"
        )
