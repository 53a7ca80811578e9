"""Letting go of a failed operation's memory at once.

A raised exception keeps every frame it passed through, and each frame keeps its
locals: the chunks of an upload, a write's buffers. Exceptions that are stored
(a future's, a task's) or chained (``raise ... from exc``) often form reference
cycles with those frames, which only Python's cyclic collector frees, and in a
long-running server full collections are rare. A write failing with ENOSPC 50 times
a second then holds gigabytes. ``release_frames`` clears the locals of every
finished frame of an exception, its causes and contexts; the traceback (file, line,
function) stays, for logs.
"""

from __future__ import annotations

import traceback


def release_frames(exc: BaseException | None) -> None:
    """Drop the locals of the frames ``exc`` (and what it chains to) went through."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
