"""The in-memory state's dispatch steps: which bot gets which execution (locality.py's rules).

``_enqueue`` places a new or requeued execution: on the waiting session the rule
picks, or in its queue. ``_next_for`` takes the queued execution a session asking
for work gets.

Both first rank the bots by placement tier (locality.tier): a bot fits an action
(``MINE``) unless another bot that can run it holds materially more of it
(``THEIRS``), which ``_tiers`` finds by asking up to ``OTHERS_COMPARED`` connected
bots what they hold.

With ``Dispatch.wait`` (locality only), a bot takes an execution that is ``THEIRS`` to
it only after the execution waited ``wait`` seconds for a better-placed bot: a new
one is queued instead of going to a waiting bot it is ``THEIRS`` to, and a bot asking
for work takes what is ``MINE`` to it, or a ``THEIRS`` whose wait is over, or
nothing. The wait starts the first time a bot it is ``THEIRS`` to could have taken
it, with a timer that ends it after ``wait`` seconds and gives the execution to the
best waiting bot, or to the next bot that asks. Each step is synchronous, like every
other step of this state, the timer's too. How much the wait pays is in
docs/BENCHMARKS.md ("Locality dispatch").
"""

from __future__ import annotations

import asyncio

from server.scheduler.clock import Clock
from server.scheduler.locality import (MINE, Dispatch, backlog_full, choose_bot, choose_placed, deep_queue,
                                      holder_moved_on, holder_wait_mark, own_work, sketch_total, tiers_among,
                                      urgent)
from server.scheduler.operation import Stage
from server.scheduler.state.memory.queues import ActionQueues
from server.scheduler.state.memory.records import BotSession, Execution
from server.scheduler.state.memory.worker_index import WorkerIndex

NOT_WAITING, WAITING, WAIT_OVER = 0, 1, 2  # Execution.waiting
OTHERS_COMPARED = 16  # connected bots asked what they hold of an execution a bot might take


class MemoryPlacement:
    _dispatch: Dispatch
    _clock: Clock
    _workers: WorkerIndex
    _queues: ActionQueues

    def _assign(self, execution: Execution, session: BotSession, now: float) -> None:
        raise NotImplementedError  # MemoryTables

    def _enqueue(self, execution: Execution, now: float) -> None:
        session, tier_of_it, holder = self._waiting_bot_for(execution, now)
        if session is not None and self._may_take(execution, tier_of_it, holder):
            self._assign(execution, session, now)
        else:
            self._queues.push(execution)

    def _waiting_bot_for(self, execution: Execution,
                         now: float) -> tuple[BotSession | None, int, BotSession | None]:
        """The waiting session a new execution goes to, its placement tier there and the
        bot holding most of it (``_tiers``):
        the longest waiting (fifo, and for an urgent action: locality.urgent), or of the
        best tier, the best placed, then least loaded (locality.choose_bot), counting
        sessions on their way back from a call that hold some of it as waiting, after
        those in a held call."""
        key = execution.action.requirements
        dispatch = self._dispatch
        if not dispatch.locality or urgent(execution.priority):
            return self._workers.first_idle(key), MINE, None
        sketch = execution.action.sketch
        candidates = self._workers.idle(key, dispatch.max_idle_scored)
        held = [s.held(sketch) for s in candidates]
        if sketch:
            for session in self._workers.returning(key, now - dispatch.return_window, dispatch.max_idle_scored):
                estimate = session.held(sketch)
                if estimate:
                    candidates.append(session)
                    held.append(estimate)
        if not candidates:
            return None, MINE, None
        tiers, holder = self._tiers(execution, candidates, held)
        chosen = choose_bot(dispatch, held, [s.load() for s in candidates], tiers) if len(candidates) > 1 else 0
        return candidates[chosen], tiers[chosen], holder

    def _tiers(self, execution: Execution, takers: list[BotSession],
               held: list[int]) -> tuple[list[int], BotSession | None]:
        """Each taker's placement tier for the execution (locality.tier), ``held`` being
        what each holds of it: against what the other connected bots that can run it
        hold (up to ``OTHERS_COMPARED`` of them); and the bot holding most of it (None
        when every tier is ``MINE`` without asking the others)."""
        sketch = execution.action.sketch
        dispatch = self._dispatch
        total = sketch_total(sketch)
        if total < dispatch.min_home or all(total - own < dispatch.min_gain for own in held):
            return [MINE] * len(takers), None  # little to fetch, wherever it goes: no need to ask the others
        holders = {s: s.held(sketch) for s in self._workers.connected(execution.action.requirements, OTHERS_COMPARED)}
        holders.update(zip(takers, held))
        tiers = tiers_among(dispatch, total, held, list(holders.values()))
        return tiers, max(holders, key=holders.__getitem__)

    def _may_take(self, execution: Execution, tier_of_it: int, holder: BotSession | None) -> bool:
        """Whether a bot whose placement tier for the execution is ``tier_of_it`` may
        take it now: yes if it fits (``MINE``); with a wait (``Dispatch.wait``), only
        once the execution has waited that long for a better-placed bot, which starts
        the wait if it had not started; with none, only once ``holder`` (the bot
        holding most of it) has moved on (``_waits_for_holder``), or at once without
        ``Dispatch.wait_for_holder``."""
        dispatch = self._dispatch
        if tier_of_it == MINE or execution.waiting == WAIT_OVER:
            return True
        if dispatch.wait <= 0:
            return not (dispatch.wait_for_holder and holder is not None and self._waits_for_holder(execution, holder))
        if execution.waiting == NOT_WAITING:
            execution.waiting = WAITING
            asyncio.get_running_loop().call_later(self._dispatch.wait, self._wait_over, execution)
        return False

    def _waits_for_holder(self, execution: Execution, holder: BotSession) -> bool:
        """Whether the execution still waits for ``holder``, which holds materially more
        of it than the bot that might take it: until the holder has been given as many
        other actions as it has slots since the wait began, once per
        ``holder_wait_bytes`` of its inputs (locality.holder_wait_mark, holder_moved_on),
        which ``_holder_progressed`` checks each time it is given one; or at most
        ``holder_wait_max`` seconds (a holder running a long action). A new holder
        starts a new wait, unless ``holder_backlog`` per slot wait for it already
        (locality.backlog_full)."""
        if execution.awaited is not holder:
            waiting = sum(1 for e in holder.awaited_by if e.awaited is holder and e.stage is Stage.QUEUED)
            if backlog_full(self._dispatch, waiting, holder.registration.capacity):
                return False
            execution.awaited = holder
            execution.awaited_mark = holder_wait_mark(self._dispatch, sketch_total(execution.action.sketch),
                                                      holder.given, holder.registration.capacity)
            holder.awaited_by.append(execution)
            asyncio.get_running_loop().call_later(self._dispatch.holder_wait_max, self._holder_wait_over,
                                                  execution, holder)
        return not holder_moved_on(holder.given - execution.awaited_mark, holder.registration.capacity)

    def _own_work(self, execution: Execution, session: BotSession) -> bool:
        """Whether the execution being given to the session is one it holds already
        (locality.own_work): not progress for the executions waiting for it."""
        dispatch = self._dispatch
        if not (dispatch.locality and dispatch.wait_for_holder and session.cache is not None):
            return False
        sketch = execution.action.sketch
        return own_work(dispatch, sketch_total(sketch), session.held(sketch))

    def _holder_progressed(self, holder: BotSession) -> None:
        """``holder`` was given an action: each execution waiting for it whose wait is
        now over goes to the best waiting bot, or to the next bot that asks."""
        if not holder.awaited_by:
            return
        still: list[Execution] = []
        over: list[Execution] = []
        for execution in holder.awaited_by:
            if execution.awaited is not holder or execution.stage is not Stage.QUEUED:
                continue  # taken, or waiting for another holder now
            moved_on = holder_moved_on(holder.given - execution.awaited_mark, holder.registration.capacity)
            (over if moved_on else still).append(execution)
        holder.awaited_by = still
        for execution in over:
            execution.awaited = None
            self._wait_over(execution)

    def _holder_wait_over(self, execution: Execution, holder: BotSession) -> None:
        """Timer: the execution waited ``holder_wait_max`` for ``holder``; if it still
        waits for it, the wait is over."""
        if execution.awaited is holder and execution.stage is Stage.QUEUED:
            execution.awaited = None
            self._wait_over(execution)

    def _wait_over(self, execution: Execution) -> None:
        """Timer: the execution waited long enough; if it is still queued, the best
        waiting bot gets it now, or else the next bot that asks."""
        execution.waiting = WAIT_OVER
        if execution.stage is not Stage.QUEUED or execution.queue_entry is None:
            return
        now = self._clock.now()
        session, _, _ = self._waiting_bot_for(execution, now)
        if session is not None:
            self._queues.discard(execution)
            self._assign(execution, session, now)

    def _next_for(self, session: BotSession) -> Execution | None:
        """Take the queued execution a session gets next: the best by (priority, arrival)
        (fifo), or, within the best priority, by placement tier, then the one it holds
        most of (locality.choose_placed); with a wait, one it does not fit only once
        that one waited long enough for a better-placed bot, or none; in a deep queue
        (locality.deep_queue: a full window) it waits for no holder."""
        keys = session.matching_keys
        first = self._queues.pop_best(keys)
        dispatch = self._dispatch
        if first is None or not dispatch.locality or session.cache is None or urgent(first.priority):
            return first  # fifo's choice; the window would hold only urgent actions, placed as fifo does
        window = [first]
        while len(window) < dispatch.window and self._queues.best_priority(keys) == first.priority:
            nxt = self._queues.pop_best(keys)
            assert nxt is not None
            window.append(nxt)
        held = [session.held(e.action.sketch) for e in window]
        placed = [self._tiers(e, [session], [h]) for e, h in zip(window, held)]
        tiers = [tiers_of[0] for tiers_of, _ in placed]
        deep = deep_queue(dispatch, len(window))  # no wait can pay: every bot has work for a while
        takeable = [e.passes >= dispatch.max_passes or deep or self._may_take(e, t, holder)
                    for e, t, (_, holder) in zip(window, tiers, placed)]
        chosen = choose_placed(dispatch, held, [e.passes for e in window], tiers, takeable)
        for index, execution in enumerate(window):
            if chosen is not None and index < chosen:
                execution.passes += 1
            if index != chosen:
                self._queues.push(execution)
        return None if chosen is None else window[chosen]
