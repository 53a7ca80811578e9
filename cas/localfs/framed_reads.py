"""Reading a value's chunks straight into ``bytes`` objects that already hold a frame.

gRPC's Python API sends each message as one ``bytes`` object (it refuses a
``bytearray`` or a ``memoryview``), so a ByteStream read answered from a file copied
every chunk twice in Python before gRPC's own copy: ``pread`` into a fresh ``bytes``,
then the join behind the ReadResponse's tag and length. Here a window of chunks is
read by one ``preadv`` straight into fresh ``bytes`` objects, each already holding
its frame (``BlobStore.read_framed``, cas/store.py): the join's copy is gone (~9 of
~27 ms of a 64 MiB read's own CPU, measured in-process; docs/BENCHMARKS.md).

A fresh ``bytes`` to fill is made as C code makes one: CPython's
``PyBytes_FromStringAndSize(NULL, size)`` returns a new object of ``size`` bytes
left uninitialised. It is filled through a writable view of its buffer before
anything else holds a reference to it, and the view is let go once filled (or the
object dropped if the read fails), so no one ever sees it change. Size 0 is never
asked for (CPython shares its empty ``bytes``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

from cas.localfs.files import CorruptValue, open_and_read
from cas.store import Framed

_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_buffer_of = ctypes.pythonapi.PyBytes_AsString
_buffer_of.restype = ctypes.c_void_p
_buffer_of.argtypes = [ctypes.py_object]


def _fresh_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new, unshared ``bytes`` of ``size`` (> 0) bytes and a writable view of it to fill."""
    if size <= 0:
        raise ValueError(f"a fresh bytes object needs a size above 0, not {size}")
    made = _new_bytes(None, size)
    return made, memoryview((ctypes.c_ubyte * size).from_address(_buffer_of(made))).cast("B")


def read_framed_range(fd: int, offset: int, size: int, chunk_size: int, frame: Callable[[int], bytes]) -> list[Framed]:
    """Bytes ``offset`` to ``offset + size`` of an open value in chunks of ``chunk_size``,
    each read behind ``frame(its size)`` into one ``bytes`` (a ``read_framed`` chunk).
    Raises CorruptValue if the file ends first, and OSError as ``os.preadv`` does."""
    framed: list[Framed] = []
    targets: list[memoryview] = []
    try:
        for start in range(0, size, chunk_size):
            length = min(chunk_size, size - start)
            header = frame(length)
            made, view = _fresh_bytes(len(header) + length)
            view[: len(header)] = header
            framed.append((made, length))
            targets.append(view)
            targets.append(view[len(header) :])
        _preadv_exact(fd, targets[1::2], offset, size)
    finally:
        for view in reversed(targets):  # the slices first, then the views they are slices of
            view.release()
    return framed


def _preadv_exact(fd: int, buffers: list[memoryview], offset: int, size: int) -> None:
    got = 0
    while buffers:
        done = os.preadv(fd, buffers, offset + got)
        if done == 0:
            raise CorruptValue(f"value ended after {offset + got} bytes, expected at least {offset + size}")
        got += done
        while buffers and done >= len(buffers[0]):  # drop the buffers filled; trim a partly filled one
            done -= len(buffers[0])
            buffers = buffers[1:]
        if done:
            buffers[0] = buffers[0][done:]


def open_framed(
    path: str, length: int, offset: int, size: int, keep_open: bool, chunk_size: int, frame: Callable[[int], bytes]
) -> tuple[int, list[Framed]]:
    """``open_value`` (cas/localfs/files.py) for a framed read: open a value, check its
    size, and read its first ``size`` bytes from ``offset`` as framed chunks."""
    return open_and_read(path, length, keep_open,
                         lambda fd: read_framed_range(fd, offset, size, chunk_size, frame) if size else [])
