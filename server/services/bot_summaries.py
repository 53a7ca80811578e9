"""What a bot says it holds and how busy it is: the Bots extension of docs/BOTS_PROTOCOL.md section 8.

Opt-in, like inline blobs: a bot asks with the worker config ``reapi-cache-summary`` =
N (the most bytes of cache summary it would send); every answer to it carries the
trailing metadata entry ``reapi-cache-summary`` = M, N capped by what this server
takes (0 when its dispatch does not use them). With M > 0, the bot may attach to
CreateBotSession and UpdateBotSession calls:

- ``reapi-cache-summary-bin``: a DigestFilter of the blobs it holds
  (cas/digest_filter.py), at most M bytes; sent when it changed, kept until the next;
- ``reapi-bot-load``: ``cpu=F memory=F``, its recent CPU and memory pressure, 0 to 1.

A summary that is too big or malformed is ignored (and logged): it only steers
placement, so it never fails the call that carries the bot's results.

The Bots service also keeps each session's latest cache summary (``SessionFilters``)
so that a lease does not carry input files the bot says it holds (section 7).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cas.bots_protocol_names import LOAD_KEY, SUMMARY_CONFIG, SUMMARY_KEY
from cas.lru import Lru
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from server.scheduler.locality import valid_summary
from server.scheduler.sessions import BotSummary

log = logging.getLogger("reapi.server.bots")

MAX_SUMMARY_BYTES = 32 << 10  # what this server takes at most (its metadata limit leaves room)
# What the Bots service keeps of sessions' summaries (reapi-worker's are 8 KiB: 2,000 bots).
SESSION_FILTER_BYTES = 16 << 20


def agreed_limit(session: bots_pb2.BotSession, server_limit: int) -> int:
    """The summary bytes the bot may send: what it asked for, capped; 0 if it did not ask."""
    for config in session.worker.configs:
        if config.key == SUMMARY_CONFIG:
            try:
                asked = int(config.value)
            except ValueError:
                return 0
            return max(0, min(asked, server_limit))
    return 0


def summary_of(bot_id: str, metadata: Iterable[tuple[str, str | bytes]], limit: int) -> BotSummary | None:
    """The bot's summary from a call's metadata; None if it sent none (or may not)."""
    if limit <= 0:
        return None
    cache: bytes | None = None
    cpu = memory = None
    for key, value in metadata:
        if key == SUMMARY_KEY and isinstance(value, bytes):
            problem = "it is larger than the agreed limit" if len(value) > limit else valid_summary(value)
            if problem is None:
                cache = value
            else:
                log.warning("bot %s sent a cache summary that is ignored: %s", bot_id, problem)
        elif key == LOAD_KEY:
            cpu, memory = _load(value.decode(errors="replace") if isinstance(value, bytes) else value)
    if cache is None and cpu is None and memory is None:
        return None
    return BotSummary(cache, cpu, memory)


def _load(text: str) -> tuple[float | None, float | None]:
    values: dict[str, float] = {}
    for part in text.split():
        name, _, number = part.partition("=")
        try:
            values[name] = min(1.0, max(0.0, float(number)))
        except ValueError:
            continue
    return values.get("cpu"), values.get("memory")


class SessionFilters:
    """The latest cache summary (a checked DigestFilter's wire form) of each bot session,
    most recently used ``max_bytes`` of them. Only ever a hint: a session not found
    here (forgotten, or its bot sent its summary to another replica) is treated as
    holding nothing, and the worst a stale one does is leave out a file the bot then
    reads from the CAS."""

    def __init__(self, max_bytes: int = SESSION_FILTER_BYTES) -> None:
        self.max_bytes = max_bytes
        self._filters: Lru[str, bytes] = Lru(len)

    def __len__(self) -> int:
        return len(self._filters)

    def remember(self, session: str, summary: BotSummary | None) -> None:
        """Keep the summary a call carried (a call without one leaves the last one)."""
        if summary is not None and summary.cache:
            self._filters.put(session, summary.cache)
            self._filters.evict(self.max_bytes)

    def of(self, session: str) -> bytes | None:
        return self._filters.get(session)

    def forget(self, session: str) -> None:
        self._filters.pop(session)
