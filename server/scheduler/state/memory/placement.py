"""The in-memory state's dispatch steps: which bot gets which execution (locality.py's rules).

``_enqueue`` places a new or requeued execution: on the waiting session the rule
picks, or in its queue. ``_next_for`` takes the queued execution a session asking
for work gets.

With ``Dispatch.wait`` (locality only), an execution waits, for at most ``wait``
seconds, for a busy bot that holds much more of it (twice as much and ``min_gain``
more) than the bot that would take it now: a new one is queued instead of going to a
waiting bot that holds little of it, and a bot asking for work that holds little of
the queued actions leaves those a busy bot holds to that bot, taking instead the
oldest that nobody holds better, or nothing. The busy bot takes them when it asks for
work (it holds most of them); a timer started when the wait begins ends it after
``wait`` seconds, and gives the execution to the best waiting bot, or to the next bot
that asks. Each step is synchronous, like every other step of this state, the timer's
too. How much the wait pays is in docs/BENCHMARKS.md ("Locality dispatch").
"""

from __future__ import annotations

import asyncio

from server.scheduler.clock import Clock
from server.scheduler.locality import Dispatch, choose_bot, choose_queued, held_bytes
from server.scheduler.operation import Stage
from server.scheduler.state.memory.queues import ActionQueues
from server.scheduler.state.memory.records import BotSession, Execution
from server.scheduler.state.memory.worker_index import WorkerIndex

NOT_WAITING, WAITING, WAIT_OVER = 0, 1, 2  # Execution.waiting
OTHERS_COMPARED = 16  # busy bots compared with the one that would take an execution


class MemoryPlacement:
    _dispatch: Dispatch
    _clock: Clock
    _workers: WorkerIndex
    _queues: ActionQueues

    def _assign(self, execution: Execution, session: BotSession, now: float) -> None:
        raise NotImplementedError  # MemoryTables

    def _enqueue(self, execution: Execution, now: float) -> None:
        session, held = self._waiting_bot_for(execution, now)
        if session is not None and self._may_take(execution, session, held):
            self._assign(execution, session, now)
        else:
            self._queues.push(execution)

    def _waiting_bot_for(self, execution: Execution, now: float) -> tuple[BotSession | None, int]:
        """The waiting session a new execution goes to, and how much of it that one holds:
        the longest waiting (fifo), or the best placed, then least loaded
        (locality.choose_bot), counting sessions on their way back from a call that hold
        some of it as waiting, after those in a held call."""
        key = execution.action.requirements
        dispatch = self._dispatch
        if not dispatch.locality:
            return self._workers.first_idle(key), 0
        sketch = execution.action.sketch
        candidates = self._workers.idle(key, dispatch.max_idle_scored)
        held = [held_bytes(sketch, s.cache, s.expected) for s in candidates]
        if sketch:
            for session in self._workers.returning(key, now - dispatch.return_window, dispatch.max_idle_scored):
                estimate = held_bytes(sketch, session.cache, session.expected)
                if estimate:
                    candidates.append(session)
                    held.append(estimate)
        if not candidates:
            return None, 0
        chosen = choose_bot(dispatch, held, [s.load() for s in candidates]) if len(candidates) > 1 else 0
        return candidates[chosen], held[chosen]

    def _may_take(self, execution: Execution, taker: BotSession, held: int) -> bool:
        """Whether ``taker``, holding ``held`` bytes of it, may take the execution now:
        yes unless it waits (``Dispatch.wait``) for a busy bot holding much more of it,
        which starts the wait if it had not started."""
        dispatch = self._dispatch
        sketch = execution.action.sketch
        if dispatch.wait <= 0 or not sketch or execution.waiting == WAIT_OVER:
            return True
        for other in self._workers.connected(execution.action.requirements, OTHERS_COMPARED + 1):
            if other is taker or not other.healthy or not other.lease_ids:
                continue  # not busy (a waiting bot was a candidate already), or gets nothing
            if held_bytes(sketch, other.cache, other.expected) >= 2 * held + dispatch.min_gain:
                if execution.waiting == NOT_WAITING:
                    execution.waiting = WAITING
                    asyncio.get_running_loop().call_later(dispatch.wait, self._wait_over, execution)
                return False
        return True

    def _wait_over(self, execution: Execution) -> None:
        """Timer: the execution waited long enough; if it is still queued, the best
        waiting bot gets it now, or else the next bot that asks."""
        execution.waiting = WAIT_OVER
        if execution.stage is not Stage.QUEUED or execution.queue_entry is None:
            return
        now = self._clock.now()
        session, _ = self._waiting_bot_for(execution, now)
        if session is not None:
            self._queues.discard(execution)
            self._assign(execution, session, now)

    def _next_for(self, session: BotSession) -> Execution | None:
        """Take the queued execution a session gets next: the best by (priority, arrival)
        (fifo), or, within the best priority, the one it holds most of
        (locality.choose_queued); with a wait, if it holds little of that one, the
        oldest it may take (``_may_take``), or none."""
        keys = session.matching_keys
        first = self._queues.pop_best(keys)
        dispatch = self._dispatch
        if first is None or not dispatch.locality or session.cache is None:
            return first
        window = [first]
        while len(window) < dispatch.window and self._queues.best_priority(keys) == first.priority:
            nxt = self._queues.pop_best(keys)
            assert nxt is not None
            window.append(nxt)
        held = [held_bytes(e.action.sketch, session.cache, session.expected) for e in window]
        chosen: int | None = choose_queued(dispatch, held, [e.passes for e in window]) if len(window) > 1 else 0
        if dispatch.wait > 0 and chosen is not None and window[chosen].passes < dispatch.max_passes \
                and held[chosen] < dispatch.min_gain:
            chosen = next((i for i, e in enumerate(window)
                           if e.passes >= dispatch.max_passes or self._may_take(e, session, held[i])), None)
        for index, execution in enumerate(window):
            if chosen is not None and index < chosen:
                execution.passes += 1
            if index != chosen:
                self._queues.push(execution)
        return None if chosen is None else window[chosen]
