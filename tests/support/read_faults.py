"""A disk's read error midway through a value, for the framed-read tests of the store and the server."""

from __future__ import annotations

import errno
import os

import pytest

from cas.localfs import framed_reads


def fail_second_preadv(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second ``os.preadv`` of cas/localfs/framed_reads.py fails with EIO; the others read."""
    real_preadv = os.preadv
    calls = 0

    def failing_second_call(fd: int, buffers: list[memoryview], offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(framed_reads.os, "preadv", failing_second_call)
