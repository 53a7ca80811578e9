"""Claim windows read by a bot's report, kept for the claim of the same call.

A bot's call runs report, then (after the completed leases are finished) claim. With
locality, a claim is two scripts (claim_window, then claim_chosen: placement.py); the
report script reads the window too when the call claims next (report.lua), so a call
costs one script and one Redis round trip fewer, as many as fifo's. The window is kept
here until that claim takes it, and only that call's task may take it: a newer call of
the same session (which supersedes this one) or any other path reads its own window.
A call that fails before its claim leaves its window behind: never taken (no other task
matches it), replaced by the session's next report, and at most ``KEPT`` are kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

KEPT = 10_000  # windows kept at most (one per session), the oldest dropped first


class ClaimWindows:
    """Windows by session name, each with the task of the call that read it."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[asyncio.Task[Any] | None, Any]] = {}

    def keep(self, name: str, window: Any) -> None:
        """The window a report read for this task's coming claim (report.lua's last item)."""
        self._kept.pop(name, None)
        self._kept[name] = (asyncio.current_task(), window)
        if len(self._kept) > KEPT:
            del self._kept[next(iter(self._kept))]

    def take(self, name: str) -> Any | None:
        """The window kept for this task's claim, once; None if none is (another call's
        stays for that call)."""
        kept = self._kept.get(name)
        if kept is None or kept[0] is not asyncio.current_task():
            return None
        del self._kept[name]
        return kept[1]

    def __len__(self) -> int:
        return len(self._kept)
