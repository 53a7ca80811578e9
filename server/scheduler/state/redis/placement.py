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
between the two) it stays queued, and the next bot that asks takes it. A call
cancelled mid-step (a client hanging up, the replica stopping) does not cut it short
(``whole``): the step runs to its end, or a held bot would not hear of the action. A replica
places one new or requeued action at a time (``deciding``), so two arriving together
are not both judged before either is given; claims, and replicas, race each other.

Cache filters are the bulk (8 KiB from reapi-worker, 32 KiB at most): a script
returns only their version, and each replica keeps the filters it has seen
(``Summaries``), so a filter crosses from Redis once per replica per change.

The wait for the holder (``Dispatch.wait_for_holder``) lives in Redis with the queued
execution (``aw`` the holder, ``am`` its progress count ``gv`` then, ``ad`` the
deadline; lua/locality.lua): Python decides that an execution waits (its tier and
holder), the scripts keep the wait, and any replica's claim reads it. It ends in
Redis, atomically: when the holder is given its slots' worth of other work (in
``assign``, whichever replica gives it; the replica running that script is told to
place the execution, ``on_wait_over``), or at the deadline (``end_waits``, on every
replica's tick and on a timer of the replica that started a wait), so a replica
that dies mid-wait strands nothing for longer than ``holder_wait_max`` plus a tick.

The bounded wait (``Dispatch.wait``) is the memory state's only (config.py refuses it
with the Redis state): its timers would need a replica to own each waiting execution.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from server.scheduler.clock import Clock
from server.scheduler.locality import (MINE, Dispatch, backlog_full, choose_bot, choose_placed, deep_queue, held_bytes,
                                      held_bytes_each, holder_moved_on, holder_wait_mark, own_work, sketch_total, tiers_among)
from server.scheduler.sessions import BotSummary
from server.scheduler.state.redis.codec import number, text
from server.scheduler.state.redis.scripts import holder_wait

log = logging.getLogger("reapi.scheduler.redis")

SUMMARY_SESSIONS = 10_000  # filters a replica keeps (8 KiB each from reapi-worker)
WAITS_PER_SWEEP = 100  # waits past their deadline ended per script (holder_waits)
MIN_TIMER = 0.05  # seconds: the soonest this replica's deadline timer fires again
DRAIN_S = 2.0  # seconds a stopping replica waits for its placements under way

Call = Callable[..., Awaitable[Any]]
T = TypeVar("T")


_NONE_EXPECTED: frozenset[int] = frozenset()


def _expected(keys: bytes) -> frozenset[int]:
    """Record keys as the scripts send them (8 bytes each) -> locality.record_keys' ints."""
    if not keys:
        return _NONE_EXPECTED
    return frozenset(struct.unpack(f">{len(keys) // 8}Q", keys))


def summary_args(summary: BotSummary | None) -> list[object]:
    """A summary as open_session and report take it (locality.take_summary in lua/locality.lua)."""
    if summary is None:
        return ["", "", "", ""]
    return ["" if summary.cache is None else "1", summary.cache or b"",
            "" if summary.cpu is None else repr(summary.cpu), "" if summary.memory is None else repr(summary.memory)]


def _holders(others: Sequence[Any]) -> list[Holder]:
    """The other connected bots of a script's reply (lua/locality.lua ``others``) as holders."""
    return [Holder(text(other[0]), int(other[3]), int(other[4]), int(other[5])) for other in others]


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


@dataclass(frozen=True)
class Holder:
    """A bot an execution may wait for, as the scripts describe it: its session, the
    actions given to it that did not wait for it (``gv``), its slots."""

    name: str
    given: int
    slots: int
    backlog: int = 0  # executions waiting for it (``P:aw:NAME``, may count a few gone since)


class RedisPlacement:
    """The locality steps of RedisState: placing a queued execution, and a bot's claim."""

    def __init__(self, call: Call, dispatch: Dispatch, clock: Clock) -> None:
        self._call = call
        self.dispatch = dispatch
        self.clock = clock
        self.holder_wait = holder_wait(dispatch)
        self.summaries = Summaries(call)
        # One placement of a new or requeued action at a time on this replica (gather,
        # choose, apply), as the memory state's steps are atomic: two new actions of one
        # component arriving together would otherwise both be judged before either was
        # given, and go to two bots. Claims are not serialized (a drain's rate).
        self.deciding = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the wait for the holder -----------------------------------------------------

    def _keeps_waiting(self, wait: Sequence[bytes], holder: Holder, now: float) -> bool:
        """Whether a queued execution whose tier is not ``MINE`` to the bot that might
        take it waits for ``holder`` (the bot holding most of it), as the memory state's
        ``_may_take``: not once its wait is over (``wo``), nor once it was passed over
        ``max_passes`` times; waiting for that holder already, until the holder moved on
        (locality.holder_moved_on) or the deadline; waiting for no one or another, a new
        wait begins (the caller starts it: ``await_holder``) unless the holder's backlog
        is full (locality.backlog_full)."""
        awaited, mark, deadline, over, passes = wait
        if over == b"1" or int(passes) >= self.dispatch.max_passes:
            return False
        if text(awaited) != holder.name:
            return not backlog_full(self.dispatch, holder.backlog, holder.slots)
        return not (holder_moved_on(holder.given - int(mark), holder.slots) or now >= float(deadline))

    def wait_started(self) -> None:
        """This replica started a wait: its timer ends it at the deadline, should no tick do it first."""
        self._arm(self.dispatch.holder_wait_max)

    def _arm(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(max(delay, MIN_TIMER), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.spawn(self.end_waits(self.clock.now()))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a step in the background (a wake-up's or timer's), logging its failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("locality's holder wait: %s", task.exception())

    async def whole(self, step: Coroutine[Any, Any, T], deciding: bool = False) -> T:
        """Run a step that queues or frees an execution and then places it, to its end
        even if the call running it is cancelled (a client hanging up, the replica
        stopping: aclose lets it finish). Cut between its scripts, the execution would
        stay queued while a bot is held waiting for work, unplaced until that bot's
        next call. ``deciding``: the step holds ``deciding`` (a new action's placement)."""
        task = asyncio.get_running_loop().create_task(self._decided(step) if deciding else step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.add_done_callback(self._finished)  # no one awaits it now: log its failure
            raise

    async def end_waits(self, now: float) -> None:
        """The waits past their deadline end (holder_waits), whichever replica began
        them; those still queued go to the bot the rule picks, if one waits."""
        while True:
            ended, next_deadline = await self._call("holder_waits", number(now), WAITS_PER_SWEEP)
            await self.place([text(eid) for eid in ended], now)
            if len(ended) < WAITS_PER_SWEEP:
                break
        if next_deadline is not None:
            self._arm(float(next_deadline) - now)

    def on_wait_over(self, eid: str) -> None:
        """A script this replica ran ended a wait (the holder moved on): place it now."""
        self.spawn(self.place([eid], self.clock.now()))

    async def _decided(self, step: Coroutine[Any, Any, T]) -> T:
        async with self.deciding:
            return await step

    async def aclose(self) -> None:
        """Steps under way finish (a few scripts each), for at most ``DRAIN_S``; the rest are cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=DRAIN_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- placing and claiming --------------------------------------------------------

    async def place(self, execution_ids: Iterable[str], now: float) -> None:
        """Give each queued execution to the waiting bot locality.choose_bot picks, if any
        (after add_operation queued it while bots waited, or a requeue)."""
        for eid in execution_ids:
            async with self.deciding:
                reply = await self._call("place_bots", eid, number(now))
                if reply:
                    await self.choose_bot(eid, reply, now)

    async def choose_bot(self, eid: str, candidates: list[Any], now: float) -> None:
        """Give the execution to the bot locality.choose_bot picks among ``candidates``
        (place_bots' reply, or add_operation's), by placement tier first."""
        sketch, bots, others, wait = candidates
        filters = await self.summaries.of([(bot[0].decode(), bot[2]) for bot in bots]
                                          + [(other[0].decode(), other[1]) for other in others])
        names, held, loads, takers = [], [], [], []
        for (name, returning, _, leases, capacity, cpu, memory, expected, given), cache in zip(bots, filters):
            estimate = held_bytes(sketch, cache, _expected(expected))
            if returning == b"1" and not estimate:
                continue  # on its way back, it counts only if it holds some of it
            names.append(name)
            held.append(estimate)
            loads.append((int(leases) / max(int(capacity), 1), float(cpu), float(memory)))
            takers.append(Holder(text(name), int(given), int(capacity)))
        if names:
            rivals = held_bytes_each(sketch, filters[len(bots):], [_expected(other[2]) for other in others])
            tiers = self._tiers(sketch, held, rivals)
            chosen = choose_bot(self.dispatch, held, loads, tiers) if len(names) > 1 else 0
            if tiers[chosen] != MINE and self.holder_wait:
                everyone = [*zip(takers, held), *zip(_holders(others), rivals)]
                holder = max(everyone, key=lambda pair: pair[1])[0]
                if holder.name != takers[chosen].name and self._keeps_waiting(wait, holder, now):
                    if text(wait[0]) != holder.name:
                        await self._call("await_holder", eid, holder.name, number(now),
                                         holder_wait_mark(self.dispatch, sketch_total(sketch), 0, holder.slots))
                        self.wait_started()
                    return
            own = own_work(self.dispatch, sketch_total(sketch), held[chosen]) and self.holder_wait
            await self._call("place", eid, names[chosen], number(now), "1" if own else "")

    def _tiers(self, sketch: bytes, held: list[int], others: list[int]) -> list[int]:
        """Each taker's placement tier (locality.tier), ``held`` being what each holds of
        the sketched action and ``others`` what the other connected bots hold, as the
        memory state ranks them (memory/placement.py ``_tiers``)."""
        dispatch = self.dispatch
        total = sketch_total(sketch)
        if total < dispatch.min_home or all(total - own < dispatch.min_gain for own in held):
            return [MINE] * len(held)
        return tiers_among(dispatch, total, held, [*others, *held])

    async def claim(self, name: str, now: float) -> list[Any] | None:
        """A claim: the executions taken as locality.choose_placed picks them
        (placement tier, then what it holds), one free slot after the other, within the
        best queued priority. The reply: {'done', session view, the call's answer or None
        (lua/locality.lua answer_ready)}, or None (closed)."""
        reply = await self._call("claim_window", name, number(now))
        if reply and reply[0] == b"choose":
            reply = await self._claim_ranked(name, reply, now)
        return reply if reply else None

    async def _claim_ranked(self, name: str, window_reply: list[Any], now: float) -> Any:
        """The whole window in the order the rule would take it, slot after slot
        (choose_placed on what is left): claim_chosen takes the first ones still queued,
        so a pick another call took meanwhile (bots claim at the same time) falls to the
        bot's next choice, not to the oldest. Passes count as for the first ``free`` picks,
        for those the window passed by as waiting for another bot too (``skipped``; the
        memory state's window holds them, not takeable, and counts them alike), so an
        action waiting for its holder is passed over ``max_passes`` times at most."""
        _, version, free, window, others, skipped = window_reply
        [cache, *filters] = await self.summaries.of([(name, version)]
                                                    + [(other[0].decode(), other[1]) for other in others])
        rivals = _holders(others)
        deep = deep_queue(self.dispatch, len(window))  # the scripts passed by those waiting for others
        # What each other bot expects of the window's actions, all in one set: an action's
        # keys it holds are those of its keys in the set (held_bytes tests only those).
        rival_expected = [_expected(other[2]) for other in others]
        held, tiers, takeable, starts = [], [], [], []
        for eid, sketch, count, expected, *wait in window:
            own = held_bytes(sketch, cache, _expected(expected))
            total = sketch_total(sketch)
            rival_held = [] if total < self.dispatch.min_home or total - own < self.dispatch.min_gain else (
                held_bytes_each(sketch, filters, rival_expected))
            held.append(own)
            tiers.append(self._tiers(sketch, [own], rival_held)[0])
            waits = False
            if tiers[-1] != MINE and self.holder_wait and rival_held and not (deep and not wait[0]):
                holder = rivals[max(range(len(rival_held)), key=rival_held.__getitem__)]
                waits = self._keeps_waiting([*wait, count], holder, now)
                if waits and text(wait[0]) != holder.name:
                    starts += [eid, holder.name, holder_wait_mark(self.dispatch, total, 0, holder.slots)]
            takeable.append(not waits)
        passes = [int(item[2]) for item in window]
        added = [0] * len(window)
        remaining = list(range(len(window)))
        ranked: list[int] = []
        while remaining:
            candidates = remaining[:self.dispatch.window]
            pick = choose_placed(self.dispatch, [held[i] for i in candidates], [passes[i] for i in candidates],
                                 [tiers[i] for i in candidates], [takeable[i] for i in candidates])
            if pick is None:
                break  # the rest wait for their holders
            for i in candidates[:pick]:
                passes[i] += 1
                if len(ranked) < int(free):
                    added[i] += 1
            ranked.append(candidates[pick])
            remaining.remove(candidates[pick])
        passed = [(window[i][0], count) for i, count in enumerate(added) if count]
        for eid, older in skipped:  # passed over by each pick behind it
            count = sum(1 for i in ranked[:int(free)] if i >= int(older))
            if count:
                passed.append((eid, count))
        owned = [window[i][0] for i in ranked
               if self.holder_wait and own_work(self.dispatch, sketch_total(window[i][1]), held[i])]
        if starts:
            self.wait_started()
        return await self._call("claim_chosen", name, number(now), len(ranked), *[window[i][0] for i in ranked],
                                len(passed), *[part for pair in passed for part in pair], len(starts) // 3, *starts,
                                len(owned), *owned)
