"""What a script of a bot's call read for a later step of the same call.

A bot's call runs report, claim and, unless it holds, answer. With locality, a claim
is two scripts (claim_window, then claim_chosen: placement.py), so the claim returns
the call's answer too (session_answers.py) and a call runs as many scripts as with
fifo. What a script read is kept here until the step that uses it takes it, and only
that call's task may take it: a newer call of the same session (which supersedes this
one) or any other path reads its own. A call that fails before that step leaves its
item behind: never taken (no other task matches it), replaced by the session's next
one, and at most ``KEPT`` are kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

KEPT = 10_000  # items kept at most (one per session), the oldest dropped first


class CallKept:
    """Items by session name, each with the task of the call that read it."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[asyncio.Task[Any] | None, Any]] = {}

    def keep(self, name: str, item: Any) -> None:
        """What a script read for this task's next step (None: nothing, forget any kept)."""
        self._kept.pop(name, None)
        if item is None:
            return
        self._kept[name] = (asyncio.current_task(), item)
        if len(self._kept) > KEPT:
            del self._kept[next(iter(self._kept))]

    def take(self, name: str) -> Any | None:
        """The item kept for this task's step, once; None if none is (another call's
        stays for that call)."""
        kept = self._kept.get(name)
        if kept is None or kept[0] is not asyncio.current_task():
            return None
        del self._kept[name]
        return kept[1]

    def __len__(self) -> int:
        return len(self._kept)
