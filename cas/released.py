"""Letting go of a failed operation's memory at once.

A raised exception keeps every frame it passed through, and each frame keeps its
locals: the chunks of an upload, a write's buffers. Exceptions that are stored
(a future's, a task's) or chained (``raise ... from exc``) often form reference
cycles with those frames, which only Python's cyclic collector frees, and in a
long-running server full collections are rare: a write failing with ENOSPC 50 times
a second then holds gigabytes.

Two tools, for two places:
- ``drop_tracebacks`` where a failure has been answered (or stored for later): the
  exception and what it chains to forget their tracebacks, so the frames go as soon
  as nothing else holds them. It never touches a frame, so a coroutine that raised
  the same exception object and still runs is not disturbed;
- ``clear_finished_frames`` where a function called in a thread has failed: every
  frame of its traceback but the caller's has returned, so their locals can be
  cleared outright (the traceback keeps file, line and function, for logs).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def drop_tracebacks(exc: BaseException | None) -> None:
    """``exc`` (and its causes and contexts) no longer keep the frames they went through."""
    for each in _chain(exc):
        each.__traceback__ = None


def clear_finished_frames(exc: BaseException) -> None:
    """Clear the locals of the frames of a traceback that lies wholly in returned calls
    (a thread call's, caught by its wrapper); the wrapper's own frame is skipped."""
    for each in _chain(exc):
        traceback.clear_frames(each.__traceback__)


def _malloc_trim() -> object:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> bool:
    """Return the allocator's free pages to the system (glibc ``malloc_trim``). Thousands
    of freed buffers of a few hundred KiB leave holes that glibc keeps otherwise."""
    if _TRIM is None:
        return False
    _TRIM(0)  # type: ignore[operator]
    return True
