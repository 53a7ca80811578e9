"""Which connected bots can run which requirement sets, and which are waiting now.

Matching is computed once per (session, requirement set) pair, when either
appears, not per dispatch: the number of distinct requirement sets in a fleet is
small, the number of dispatches large. The index also remembers when a set last had
a matching bot, for the grace period of autoscaled pools.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from server.scheduler.platform import PlatformMatcher, RequirementSet, WorkerOffer
from server.scheduler.state.memory.records import BotSession


class WorkerIndex:
    def __init__(self, matcher: PlatformMatcher, started_at: float) -> None:
        self.matcher = matcher
        self.started_at = started_at
        self.sessions: dict[str, BotSession] = {}
        self._by_key: dict[RequirementSet, set[BotSession]] = {}
        self._last_seen: dict[RequirementSet, float] = {}
        # Sessions holding an UpdateBotSession call with free capacity, per set; a
        # dict keeps arrival order, so the longest-waiting bot gets work first.
        self._idle: dict[RequirementSet, dict[BotSession, None]] = {}
        # Sessions whose last call left them a free slot, on their way back (locality
        # dispatch counts them as waiting for a moment), most recent last.
        self._returning: dict[RequirementSet, dict[BotSession, None]] = {}

    # -- requirement sets ----------------------------------------------------

    def know(self, key: RequirementSet) -> None:
        """Start tracking ``key``: find the connected sessions that satisfy it."""
        if key in self._by_key:
            return
        matching = {s for s in self.sessions.values() if self.matcher.satisfies(s.registration.offer, key)}
        self._by_key[key] = matching
        self._idle[key] = {}
        self._returning[key] = {}
        for session in matching:
            session.matching_keys.add(key)
            if session.waiter is not None and session.free_capacity > 0 and session.healthy:
                self._idle[key][session] = None

    def can_run(self, key: RequirementSet) -> bool:
        return bool(self._by_key.get(key))

    def last_seen(self, key: RequirementSet) -> float:
        """When a matching bot was last connected (server start if never)."""
        return self._last_seen.get(key, self.started_at)

    def keys(self) -> Iterable[RequirementSet]:
        return self._by_key.keys()

    def offers(self) -> list[WorkerOffer]:
        return [s.registration.offer for s in self.sessions.values()]

    # -- sessions ------------------------------------------------------------

    def add(self, session: BotSession) -> None:
        self.sessions[session.name] = session
        offer = session.registration.offer
        for key, matching in self._by_key.items():
            if self.matcher.satisfies(offer, key):
                matching.add(session)
                session.matching_keys.add(key)

    def remove(self, session: BotSession, now: float) -> None:
        self.sessions.pop(session.name, None)
        self.set_busy(session)
        self.clear_returning(session)
        for key in session.matching_keys:
            matching = self._by_key.get(key)
            if matching is not None:
                matching.discard(session)
                if not matching:
                    self._last_seen[key] = now
        session.matching_keys.clear()

    # -- waiting sessions ----------------------------------------------------

    def set_idle(self, session: BotSession) -> None:
        for key in session.matching_keys:
            self._idle[key][session] = None

    def set_busy(self, session: BotSession) -> None:
        for key in session.matching_keys:
            idle = self._idle.get(key)
            if idle is not None:
                idle.pop(session, None)

    def connected(self, key: RequirementSet, limit: int) -> list[BotSession]:
        """Up to ``limit`` connected sessions that can run ``key`` (in no particular order)."""
        return list(islice(self._by_key.get(key, ()), limit))

    def set_returning(self, session: BotSession) -> None:
        for key in session.matching_keys:
            returning = self._returning[key]
            returning.pop(session, None)
            returning[session] = None

    def clear_returning(self, session: BotSession) -> None:
        for key in session.matching_keys:
            returning = self._returning.get(key)
            if returning is not None:
                returning.pop(session, None)

    def returning(self, key: RequirementSet, since: float, limit: int) -> list[BotSession]:
        """Up to ``limit`` sessions back from a call at ``since`` or later, with a free
        slot and not in a held call, most recent first; older ones are forgotten."""
        returning = self._returning.get(key)
        if not returning:
            return []
        out: list[BotSession] = []
        for session in reversed(list(returning)):
            if session.returned_at < since or session.free_capacity <= 0 or not session.healthy:
                returning.pop(session, None)
            elif session.waiter is None and len(out) < limit:
                out.append(session)
        return out

    def idle(self, key: RequirementSet, limit: int) -> list[BotSession]:
        """Up to ``limit`` sessions waiting for work that can run ``key``, longest waiting first."""
        idle = self._idle.get(key)
        if not idle:
            return []
        return list(islice(idle, limit))

    def first_idle(self, key: RequirementSet) -> BotSession | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        return next(iter(idle))
