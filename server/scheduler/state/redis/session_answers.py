"""What a bot's call is answered with in the Redis state, and the inline blobs each session was sent.

A call's answer is answer.lua's reply, or, with locality, the one its claim returned
(lua/locality.lua ``answer_ready``): a call that claims and does not hold answers
right after its claim, so that reply is what answer.lua would read, one script and
Redis round trip sooner. It is kept for the call's next step only (``kept``, by task:
call_kept.py): holding, or releasing a hold, drops it, and answer.lua runs.
The inline blobs (SentBlobs) are per replica: a bot that moves to another replica is
sent some blobs again.
"""

from __future__ import annotations

from typing import Any

from cas.lru import Lru
from server.scheduler.input_cache import SentBlobs
from server.scheduler.sessions import SessionAnswer
from server.scheduler.state.redis.call_kept import CallKept
from server.scheduler.state.redis.codec import Registrations, lease_view

SENT_BLOBS_SESSIONS = 10_000


class SessionAnswers:
    """Answers from their script replies; each session's SentBlobs; answers kept for a call."""

    def __init__(self, registrations: Registrations) -> None:
        self.registrations = registrations
        self.kept = CallKept()  # a claim's answer, for the same call's answer
        self._sent: Lru[str, SentBlobs] = Lru()

    def of(self, name: str, reply: list[Any], expire_time: float) -> SessionAnswer:
        """The answer of answer.lua's reply (or answer_ready's)."""
        registration = self.registrations.decode(reply[0])
        return SessionAnswer(name, [lease_view(item) for item in reply[1]], expire_time, registration.inline_limit,
                             self.sent_blobs(name))

    def sent_blobs(self, name: str) -> SentBlobs:
        sent = self._sent.get(name)
        if sent is None:
            self._sent.put(name, sent := SentBlobs())
            self._sent.evict(SENT_BLOBS_SESSIONS)
        return sent

    def forget(self, name: str) -> None:
        """The session closed."""
        self._sent.pop(name)
