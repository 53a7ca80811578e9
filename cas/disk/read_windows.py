"""The rest of a streamed read, a window per thread hop, the next read while this one is consumed.

Shared by DiskStore's ``read`` (windows of bytes, or of mapped pages) and its
``read_framed`` (windows of framed chunks, cas/localfs/framed_reads.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from cas.localfs.files import CorruptValue
from cas.localfs.io_lane import IoLane, close_after

W = TypeVar("W")


async def read_windows(
    lane: IoLane, fd: int, first: W, position: int, end: int, span: int,
    take: Callable[[int, int, int], W], release: Callable[[W], None],
    failed: Callable[[CorruptValue | OSError], Exception],
) -> AsyncIterator[W]:
    """``first``, then ``take(fd, position, size)`` of an open value up to ``end``, ``span``
    at a time. Closes ``fd`` at the end; a window read ahead for a read stopped early is
    let go (``release``) once read. A read's failure is raised as ``failed(error)``."""
    pending: asyncio.Future[W] | None = None
    try:
        pending = await lane.started(take, fd, position, min(span, end - position))
        yield first
        while pending is not None:
            window = await asyncio.shield(pending)
            position += min(span, end - position)
            pending = None
            if position < end:
                pending = await lane.started(take, fd, position, min(span, end - position))
            yield window
    except (CorruptValue, OSError) as err:
        raise failed(err) from None
    finally:
        ahead = pending
        close_after(ahead, lambda: _release_read(ahead, release, fd))


def _release_read(window: asyncio.Future[W] | None, release: Callable[[W], None], fd: int) -> None:
    if window is not None and not window.cancelled() and window.exception() is None:
        release(window.result())
    os.close(fd)
