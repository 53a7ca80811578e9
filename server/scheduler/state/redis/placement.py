"""Locality dispatch in the Redis state: the scripts gather, locality.py chooses, the scripts apply.

The rules stay in locality.py (``held_bytes``, ``tier``, ``choose_bot``,
``choose_placed``), as in the memory state (memory/placement.py); Redis keeps what
they read, so every replica sees it (keys: README.md; steps: lua/locality.lua). A
decision takes two scripts: the first returns a bounded set of candidates (the bots
waiting for a new execution: add_operation's own reply, or place_bots'; the queued
executions a bot asking for work may take: claim_window), with what the rules need
of each and of up to 16 other connected bots (for the tiers); Python chooses; the
second (place, claim_chosen) applies the choice if it still holds (another replica
may have acted between), else the next best (claim_chosen) or fifo's choice (place).
So an execution is never lost or given twice: in the worst case (a replica dies
between the two) it stays queued, and the next bot that asks takes it.

Cache filters are the bulk (8 KiB from reapi-worker, 32 KiB at most): a script
returns only their version, and each replica keeps the filters it has seen
(``Summaries``), so a filter crosses from Redis once per replica per change.

The bounded wait (``Dispatch.wait``) is the memory state's only (config.py refuses it
with the Redis state): its timers would need a replica to own each waiting execution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from server.scheduler.locality import MINE, Dispatch, choose_bot, choose_placed, held_bytes, sketch_total, tier
from server.scheduler.sessions import BotSummary
from server.scheduler.state.redis.codec import number

SUMMARY_SESSIONS = 10_000  # filters a replica keeps (8 KiB each from reapi-worker)

Call = Callable[..., Awaitable[Any]]


def _expected(keys: bytes) -> frozenset[int]:
    """Record keys as the scripts send them (8 bytes each) -> locality.record_keys' ints."""
    return frozenset(int.from_bytes(keys[i:i + 8], "big") for i in range(0, len(keys), 8))


def summary_args(summary: BotSummary | None) -> list[object]:
    """A summary as open_session and report take it (locality.take_summary in lua/locality.lua)."""
    if summary is None:
        return ["", "", "", ""]
    return ["" if summary.cache is None else "1", summary.cache or b"",
            "" if summary.cpu is None else repr(summary.cpu), "" if summary.memory is None else repr(summary.memory)]


class Summaries:
    """The cache filters this replica has seen, by session and version (bounded, least recently used out)."""

    def __init__(self, call: Call, max_sessions: int = SUMMARY_SESSIONS) -> None:
        self._call = call
        self._known: OrderedDict[str, tuple[bytes, bytes | None]] = OrderedDict()
        self.max_sessions = max_sessions

    def remember(self, name: str, version: object, summary: BotSummary | None) -> None:
        """What this replica just stored for a session (open_session, report: ``version`` is their reply)."""
        if summary is not None and summary.cache is not None:
            assert isinstance(version, bytes)
            self._keep(name, version, summary.cache or None)

    def _keep(self, name: str, version: bytes, cache: bytes | None) -> None:
        self._known[name] = (version, cache)
        self._known.move_to_end(name)
        if len(self._known) > self.max_sessions:
            self._known.popitem(last=False)

    async def of(self, wanted: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """The filter of each (session, version); those not seen yet are fetched in one script."""
        missing = [name for name, version in wanted if version and self._known.get(name, (b"",))[0] != version]
        if missing:
            for name, (version, cache) in zip(missing, await self._call("summaries", *missing)):
                self._keep(name, version, cache or None)
        out = []
        for name, version in wanted:
            known = self._known.get(name)
            out.append(known[1] if version and known is not None else None)
        return out


class RedisPlacement:
    """The locality steps of RedisState: placing a queued execution, and a bot's claim."""

    def __init__(self, call: Call, dispatch: Dispatch) -> None:
        self._call = call
        self.dispatch = dispatch
        self.summaries = Summaries(call)

    async def place(self, execution_ids: Iterable[str], now: float) -> None:
        """Give each queued execution to the waiting bot locality.choose_bot picks, if any
        (after add_operation queued it while bots waited, or a requeue)."""
        for eid in execution_ids:
            reply = await self._call("place_bots", eid, number(now))
            if reply:
                await self.choose_bot(eid, reply, now)

    async def choose_bot(self, eid: str, candidates: list[Any], now: float) -> None:
        """Give the execution to the bot locality.choose_bot picks among ``candidates``
        (place_bots' reply, or add_operation's), by placement tier first."""
        sketch, bots, others = candidates
        filters = await self.summaries.of([(bot[0].decode(), bot[2]) for bot in bots]
                                          + [(other[0].decode(), other[1]) for other in others])
        names, held, loads = [], [], []
        for (name, returning, _, leases, capacity, cpu, memory, expected), cache in zip(bots, filters):
            estimate = held_bytes(sketch, cache, _expected(expected))
            if returning == b"1" and not estimate:
                continue  # on its way back, it counts only if it holds some of it
            names.append(name)
            held.append(estimate)
            loads.append((int(leases) / max(int(capacity), 1), float(cpu), float(memory)))
        if names:
            rivals = [held_bytes(sketch, cache, _expected(expected))
                      for (_, _, [expected]), cache in zip(others, filters[len(bots):])]
            tiers = self._tiers(sketch, held, rivals)
            chosen = choose_bot(self.dispatch, held, loads, tiers) if len(names) > 1 else 0
            await self._call("place", eid, names[chosen], number(now))

    def _tiers(self, sketch: bytes, held: list[int], others: list[int]) -> list[int]:
        """Each taker's placement tier (locality.tier), ``held`` being what each holds of
        the sketched action and ``others`` what the other connected bots hold, as the
        memory state ranks them (memory/placement.py ``_tiers``)."""
        dispatch = self.dispatch
        total = sketch_total(sketch)
        if total < dispatch.min_home or all(total - own < dispatch.min_gain for own in held):
            return [MINE] * len(held)
        top = sorted([*others, *held], reverse=True)[:2]
        return [tier(dispatch, total, own, top[1] if len(top) > 1 and own == top[0] else top[0]) for own in held]

    async def claim(self, name: str, now: float) -> list[Any] | None:
        """claim's session view, the executions taken as locality.choose_placed picks them
        (placement tier, then what it holds), one free slot after the other, within the
        best queued priority."""
        reply = await self._call("claim_window", name, number(now))
        if reply and reply[0] == b"choose":
            reply = await self._claim_ranked(name, reply, now)
        return reply[1] if reply else None

    async def _claim_ranked(self, name: str, window_reply: list[Any], now: float) -> Any:
        """The whole window in the order the rule would take it, slot after slot
        (choose_placed on what is left): claim_chosen takes the first ones still queued,
        so a pick another call took meanwhile (bots claim at the same time) falls to the
        bot's next choice, not to the oldest. Passes count as for the first ``free`` picks."""
        _, version, free, window, others = window_reply
        [cache, *filters] = await self.summaries.of([(name, version)]
                                                    + [(other[0].decode(), other[1]) for other in others])
        held = [held_bytes(sketch, cache, _expected(expected)) for _, sketch, _, expected in window]
        tiers = [self._tiers(sketch, [own], [held_bytes(sketch, other_cache, _expected(other[2][j]))
                                            for other, other_cache in zip(others, filters)])[0]
                 for j, ((_, sketch, _, _), own) in enumerate(zip(window, held))]
        passes = [int(count) for _, _, count, _ in window]
        added = [0] * len(window)
        remaining = list(range(len(window)))
        ranked: list[int] = []
        while remaining:
            candidates = remaining[:self.dispatch.window]
            pick = choose_placed(self.dispatch, [held[i] for i in candidates], [passes[i] for i in candidates],
                                 [tiers[i] for i in candidates]) if len(candidates) > 1 else 0
            assert pick is not None  # every one may be taken: no wait in the Redis state
            for i in candidates[:pick]:
                passes[i] += 1
                if len(ranked) < int(free):
                    added[i] += 1
            ranked.append(candidates[pick])
            remaining.remove(candidates[pick])
        passed = [(window[i][0], count) for i, count in enumerate(added) if count]
        return await self._call("claim_chosen", name, number(now), len(ranked), *[window[i][0] for i in ranked],
                                len(passed), *[part for pair in passed for part in pair])
