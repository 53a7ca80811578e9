"""The blocking file operations of a DiskStore. Each function is one I/O-thread hop.

The batch functions (``write_values``, ``read_values``) handle many files per hop:
for a 1 KiB blob the hop to a thread costs more than the file itself, so a
BatchUpdateBlobs of 1,000 blobs must not make 1,000 hops. Raw ``os`` calls are
used instead of ``open()`` file objects because they are several times cheaper
per small file.

Values are written to a temp file and renamed into place only once complete, so
a reader never sees a partial value under its final name. See DiskStore's
docstring for the fsync policy.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cas.errors import Internal, ReapiError, ResourceExhausted

T = TypeVar("T")

_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_IOV_MAX = 1024


def as_store_error(store: str, err: OSError, action: str, path: str) -> ReapiError:
    """The status a client gets for a file system failure: a full disk is
    RESOURCE_EXHAUSTED (it may pass), anything else INTERNAL, naming the file."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{store}: no space left to {action} {path}")
    return Internal(f"{store}: cannot {action} {path}: {err.strerror or err} (errno {err.errno})")


class CorruptValue(Exception):
    """A value file whose size differs from the length in its name (crash truncation)."""


@dataclass(slots=True)
class PendingWrite:
    """One small value to put, planned on the event loop, written in a thread."""

    tmp_path: str
    final_path: str
    # The same key stored under another length (an action cache overwrite): removed
    # after the rename, so the new value is never absent.
    old_path: str | None
    data: bytes
    # A value of the same length is already stored: compare first, skip the write if equal.
    compare: bool


def _rename_into_place(tmp_path: str, final_path: str, fsync: bool) -> None:
    os.rename(tmp_path, final_path)
    if fsync:
        fsync_dir(os.path.dirname(final_path))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_if_exists(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _holds(path: str, data: bytes) -> bool:
    """Whether ``path`` already holds exactly ``data``."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return False
    try:
        return os.read(fd, len(data) + 1) == data
    finally:
        os.close(fd)


def write_values(items: Sequence[PendingWrite], fsync: bool) -> list[bool | OSError]:
    """Write each value to its temp file and rename it into place.

    Per item: True when written, False when an identical value was already there,
    or the OSError that stopped it (its temp file is removed).
    """
    outcomes: list[bool | OSError] = []
    for item in items:
        if item.compare and _holds(item.final_path, item.data):
            outcomes.append(False)
            continue
        fd = -1
        try:
            fd = create_temp(item.tmp_path)
            written = os.write(fd, item.data)
            if written != len(item.data):  # short writes are rare; finish them
                write_all(fd, [memoryview(item.data)[written:]])
            if fsync:
                os.fdatasync(fd)
            os.close(fd)
            fd = -1
            _rename_into_place(item.tmp_path, item.final_path, fsync)
            if item.old_path is not None:
                _remove_if_exists(item.old_path)
            outcomes.append(True)
        except OSError as err:
            discard(fd, item.tmp_path)
            outcomes.append(err)
    return outcomes


def create_temp(tmp_path: str) -> int:
    try:
        return os.open(tmp_path, _CREATE_FLAGS, 0o644)
    except FileNotFoundError:
        # Shard directories are made on first use (a temp file lives in its value's shard).
        os.makedirs(os.path.dirname(tmp_path), exist_ok=True)
        return os.open(tmp_path, _CREATE_FLAGS, 0o644)


def write_all(fd: int, buffers: Sequence[bytes | memoryview]) -> None:
    """Write every buffer, in order, with as few system calls as possible."""
    pending = [memoryview(b) for b in buffers if b]
    while pending:
        batch = pending[:_IOV_MAX]
        written = os.writev(fd, batch) if len(batch) > 1 else os.write(fd, batch[0])
        # Drop fully written buffers; trim a partially written one.
        i = 0
        while i < len(batch) and written >= len(batch[i]):
            written -= len(batch[i])
            i += 1
        del pending[:i]
        if written:
            pending[0] = pending[0][written:]


def finish_stream(fd: int, buffers: Sequence[bytes], tmp_path: str, final_path: str, old_path: str | None, fsync: bool) -> None:
    """Write a streamed value's last buffers, close it and rename it into place.

    Always closes ``fd``; on any failure the temp file is removed too.
    """
    try:
        write_all(fd, buffers)
        if fsync:
            os.fdatasync(fd)
    except BaseException:
        discard(fd, tmp_path)
        raise
    os.close(fd)
    try:
        _rename_into_place(tmp_path, final_path, fsync)
    except BaseException:
        _remove_if_exists(tmp_path)
        raise
    if old_path is not None:
        _remove_if_exists(old_path)


def discard(fd: int, tmp_path: str) -> None:
    """Close (if open) and remove an unfinished temp file."""
    if fd >= 0:
        os.close(fd)
    _remove_if_exists(tmp_path)


def open_value(path: str, length: int, offset: int, first: int, keep_open: bool) -> tuple[int, bytes]:
    """Open a value, check its size, and read its first ``first`` bytes from ``offset``.

    Returns the descriptor (-1 unless ``keep_open``) and the bytes read.
    Raises FileNotFoundError if it is gone and CorruptValue if its size is wrong.
    """
    return open_and_read(path, length, keep_open, lambda fd: pread_exact(fd, first, offset) if first else b"")


def open_and_read(path: str, length: int, keep_open: bool, read: Callable[[int], T]) -> tuple[int, T]:
    """``open_checked``, then ``read(fd)``; the descriptor is closed if the read fails,
    and after it unless ``keep_open`` (then -1 is returned in its place)."""
    fd = open_checked(path, length)
    try:
        got = read(fd)
    except BaseException:
        os.close(fd)
        raise
    if not keep_open:
        os.close(fd)
        fd = -1
    return fd, got


def open_checked(path: str, length: int) -> int:
    """Open a value for reading, checking its size (FileNotFoundError if gone,
    CorruptValue if its size is not ``length``)."""
    fd = os.open(path, _READ_FLAGS)
    try:
        size = os.fstat(fd).st_size
        if size != length:
            raise CorruptValue(f"{path} is {size} bytes, expected {length}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise CorruptValue(f"value ended after {offset + got} bytes, expected at least {offset + size}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# Read in at once when mapped (Linux), so copying out of the map never waits for the disk.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def map_range(fd: int, offset: int, size: int) -> memoryview:
    """Bytes ``offset`` to ``offset + size`` of an open value, mapped rather than copied.

    A large read's bytes are copied once, by whoever consumes them (a ByteStream
    response), straight out of the page cache: ``pread`` copied them first into a
    buffer of its own, the largest single cost of a 64 MiB read from a tmpfs. The map
    goes when the last view of it does. The file must still hold the range (checked
    here, else CorruptValue): a value file is never truncated in place (values are
    renamed into place whole and only ever unlinked, which leaves a map intact);
    only something outside the store truncating it during a read could make the
    map fault. Where mapping fails, the range is read as before.
    """
    if os.fstat(fd).st_size < offset + size:
        raise CorruptValue(f"value is {os.fstat(fd).st_size} bytes, expected at least {offset + size}")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        mapped = mmap.mmap(fd, offset + size - start, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=start)
    except OSError:
        return memoryview(pread_exact(fd, size, offset))
    return memoryview(mapped)[offset - start :]


def read_range(fd: int, offset: int, size: int) -> memoryview:
    """Bytes ``offset`` to ``offset + size`` of an open value, read (``map_range``'s
    safe twin: a disk's read error is an OSError here, not a SIGBUS)."""
    return memoryview(pread_exact(fd, size, offset))


def unmap(view: memoryview) -> None:
    """Let go of a range from ``map_range`` now: its map (and the descriptor the map
    holds) closes unless a consumer still holds a view of it, which then lets go of it."""
    close = getattr(view.obj, "close", None)  # a map's; bytes read where mapping failed have none
    view.release()
    if close is not None:
        try:
            close()
        except BufferError:
            pass  # views of it are still held: it closes when the last one goes


def read_values(items: Sequence[tuple[str, int]]) -> list[bytes | None | CorruptValue]:
    """Read whole small values: the bytes, None if gone, or CorruptValue if the size is wrong."""
    out: list[bytes | None | CorruptValue] = []
    for path, length in items:
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            out.append(None)
            continue
        try:
            data = os.read(fd, length + 1)
            if len(data) != length:
                # A short read of a regular file means EOF; check rather than assume.
                size = os.fstat(fd).st_size
                if size != length:
                    out.append(CorruptValue(f"{path} is {size} bytes, expected {length}"))
                    continue
                data = pread_exact(fd, length, 0)
            out.append(data)
        finally:
            os.close(fd)
    return out


def remove_files(paths: Sequence[str]) -> list[tuple[str, OSError]]:
    """Unlink each path; return the failures other than 'already gone'."""
    failures = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            failures.append((path, err))
    return failures


def touch_files(touches: Sequence[tuple[str, float]]) -> list[tuple[str, OSError]]:
    """Record each access time as its file's mtime, so LRU order survives a crash."""
    failures = []
    for path, when in touches:
        try:
            os.utime(path, (when, when))
        except FileNotFoundError:
            pass  # evicted or overwritten since; nothing to refresh
        except OSError as err:
            failures.append((path, err))
    return failures
