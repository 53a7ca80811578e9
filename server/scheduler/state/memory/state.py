"""MemoryState: the scheduler's state in this process's memory.

Each transition is a coroutine that never awaits, so it runs as one synchronous
step: nothing is ever half-changed where another task could look, and no locks are
needed. Dispatch is event-driven: a session holding an UpdateBotSession call waits
on a future that ``_assign`` resolves the moment work arrives. Data structures and
their costs: docs/SCHEDULER.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock
from server.scheduler.farm import FarmSnapshot, RunningAction, WorkerView
from server.scheduler.interface import LogStreamFactory, SchedulerSettings
from server.scheduler.operation import OperationState, PreparedAction, Stage
from server.scheduler.platform import PlatformMatcher, RequirementSet, WorkerOffer
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, SessionAnswer
from server.scheduler.state.interface import SchedulerState
from server.scheduler.state.memory.records import BotSession, Execution, Operation, state_of
from server.scheduler.state.memory.tables import MemoryTables
from server.scheduler.state.memory.watch import MemoryWatch
from server.scheduler.state.views import (
    CompletedLease,
    DedupKey,
    Lost,
    OtherBot,
    ReportOutcome,
    RunningLease,
    SessionView,
    Unserved,
)


def memory_state(
    matcher: PlatformMatcher, settings: SchedulerSettings, log_streams: LogStreamFactory | None, clock: Clock
) -> MemoryState:
    """The StateFactory of the in-memory state."""
    return MemoryState(matcher, clock.now(), log_streams=log_streams, stream_retention=settings.operation_retention,
                       dispatch=settings.dispatch, clock=clock)


class MemoryState(MemoryTables, SchedulerState):
    """The transitions of SchedulerState, each one synchronous step over the tables."""

    # -- operations and executions ---------------------------------------------

    async def add_operation(
        self, name: str, action: PreparedAction, priority: int, dedup: DedupKey | None, now: float,
        worker_grace: float, owner: str = "",
    ) -> OperationState | Unserved:
        if name in self._ops:
            raise InvalidArgument(f"operation {name} already exists")
        self._workers.know(action.requirements)
        self._seq += 1
        execution = None if dedup is None else self._inflight.get(dedup)
        if execution is not None:
            if priority < execution.priority and execution.stage is Stage.QUEUED:
                self._queues.discard(execution)
                execution.priority = priority
                self._queues.push(execution)
            operation = Operation(name, execution, self._seq, first_event=len(execution.history) - 1, owner=owner)
        else:
            since = self._unserved_since(action.requirements)
            if since is not None and now - since > worker_grace:
                return Unserved(since)
            execution = Execution(
                id=self._new_id(), action=action, priority=priority, seq=self._seq, queued_at=now, dedup_key=dedup
            )
            if dedup is not None:
                self._inflight[dedup] = execution
            operation = Operation(name, execution, self._seq, first_event=0, owner=owner)
            execution.record(Stage.QUEUED)
            self._enqueue(execution, now)
        execution.operations.append(name)
        self._ops[name] = operation
        return state_of(operation)

    async def watch(self, name: str, replay: bool) -> MemoryWatch | None:
        operation = self._ops.get(name)
        return None if operation is None else MemoryWatch(operation, replay)

    async def operation(self, name: str) -> OperationState | None:
        operation = self._ops.get(name)
        return None if operation is None else state_of(operation)

    async def operations(self, instance_name: str | None, after: int) -> AsyncIterator[tuple[int, OperationState]]:
        for operation in sorted(self._ops.values(), key=lambda o: o.seq):
            if operation.seq <= after:
                continue
            if instance_name is not None and operation.execution.action.instance_name != instance_name:
                continue
            yield operation.seq, state_of(operation)

    async def cancel_operation(
        self, name: str, response: re_pb2.ExecuteResponse, stop_response: re_pb2.ExecuteResponse, now: float
    ) -> bool:
        operation = self._ops.get(name)
        if operation is None:
            return False
        if operation.done:
            return True
        operation.cancelled_response = response
        operation.finished_at = now
        self._finished.append((now, name))
        execution = operation.execution
        if name in execution.operations:
            execution.operations.remove(name)
        if not execution.operations:
            self._stop(execution, stop_response, now)
        execution.notify()
        return True

    async def forget_operation(self, name: str) -> bool:
        operation = self._ops.pop(name, None)
        if operation is None:
            return False
        if name in operation.execution.operations:
            operation.execution.operations.remove(name)
        return True

    async def drop_finished(self, now: float, retention: float) -> None:
        while self._finished and self._finished[0][0] + retention <= now:
            _, name = self._finished.popleft()
            self._ops.pop(name, None)

    async def awaits_result(self, execution_id: str) -> bool:
        execution = self._running.get(execution_id)
        return execution is not None and self._awaits_result(execution)

    async def finish_execution(self, execution_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        execution = self._running.get(execution_id)
        if execution is None or not self._awaits_result(execution):
            return False
        self._finish(execution, response, now)
        return True

    async def overdue_leases(self, now: float, default_timeout: float, grace: float) -> list[RunningLease]:
        leases = []
        for lease in self._leases.values():
            execution = self._running[lease.execution_id]
            if now - lease.assigned_at <= (execution.action.timeout or default_timeout) + grace:
                continue
            session = self._workers.sessions[lease.session_name]
            leases.append(RunningLease(lease.id, execution.id, execution.action, session.bot_id, lease.assigned_at))
        return leases

    async def end_lease(self, lease_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        self._stop(self._running[lease.execution_id], response, now)
        return True

    async def retry_execution(self, execution_id: str, note: str, retry_budget: int, now: float) -> Lost | None:
        execution = self._running.get(execution_id)
        if execution is None or not self._awaits_result(execution):
            return None
        return self._requeue(execution, note, retry_budget, now)

    # -- bot sessions ------------------------------------------------------------

    async def open_session(
        self, name: str, registration: BotRegistration, expires_at: float, summary: BotSummary | None = None
    ) -> None:
        session = BotSession(name=name, registration=registration, expires_at=expires_at, healthy=registration.healthy)
        session.take_summary(summary)
        self._sessions_by_bot[registration.bot_id] = session
        self._workers.add(session)

    async def session_of_bot(self, bot_id: str) -> str | None:
        session = self._sessions_by_bot.get(bot_id)
        return None if session is None else session.name

    async def session(self, name: str) -> SessionView | None:
        session = self._workers.sessions.get(name)
        return None if session is None else self._view(session)

    async def close_session(
        self, name: str, note: str, retry_budget: int, now: float, *, if_expired: bool = False
    ) -> list[Lost] | None:
        session = self._workers.sessions.get(name)
        if session is None or (if_expired and not self._expired(session, now)):
            return None
        if self._sessions_by_bot.get(session.bot_id) is session:
            del self._sessions_by_bot[session.bot_id]
        self._workers.remove(session, now)
        lease_ids = list(session.lease_ids)
        session.lease_ids.clear()
        session.cancelled.clear()
        lost = []
        for lease_id in lease_ids:
            lease = self._leases.pop(lease_id)
            self._finish_streams(lease)
            lost.append(self._requeue(self._running[lease.execution_id], note, retry_budget, now))
        session.wake()
        return lost

    async def report(
        self,
        name: str,
        bot_id: str,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata],
        summary: BotSummary | None = None,
    ) -> ReportOutcome | OtherBot | None:
        session = self._workers.sessions.get(name)
        if session is None:
            return None
        if session.bot_id != bot_id:
            return OtherBot(session.bot_id)
        session.take_summary(summary)
        session.wake()  # a newer call supersedes a held one
        session.calls_in_progress += 1
        session.healthy = healthy
        if not healthy:
            self._workers.set_busy(session)
        listed: set[str] = set()
        completed = []
        for report in reports:
            if report.lease_id not in session.lease_ids:
                continue  # unknown, cancelled or reassigned: leaving it out tells the bot to stop
            if not report.completed:
                listed.add(report.lease_id)
                continue
            del session.lease_ids[report.lease_id]
            lease = self._leases.pop(report.lease_id)
            execution = self._running[lease.execution_id]
            execution.lease_id = None
            self._finish_streams(lease)
            completed.append(CompletedLease(
                lease.id, execution.id, execution.action, execution.queued_at, session.bot_id, lease.assigned_at,
                session.registration.inline_limit, report,
            ))
        reported_ids = {r.lease_id for r in reports}
        for lease_id, (_, told) in list(session.cancelled.items()):
            if told and lease_id not in reported_ids:
                del session.cancelled[lease_id]
        for lease_id, metadata in partial_metadata.items():
            if lease_id in session.lease_ids:
                self._running[self._leases[lease_id].execution_id].partial_metadata = metadata
        return ReportOutcome(listed, completed)

    async def claim(self, name: str, now: float) -> SessionView | None:
        session = self._workers.sessions.get(name)
        if session is None:
            return None
        if session.healthy:
            while session.free_capacity > 0:
                execution = self._next_for(session)
                if execution is None:
                    break
                self._assign(execution, session, now)
        if self._dispatch.locality and session.healthy and session.free_capacity > 0 and (
                session.registration.hold_when_busy or not session.lease_ids):
            session.returned_at = now  # it calls again at once: locality may count it as waiting
            self._workers.set_returning(session)
        return self._view(session)

    async def hold(self, name: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        session = self._workers.sessions.get(name)
        if session is None:
            waiter.set_result(None)  # closed meanwhile: nothing to wait for
            return waiter
        session.waiter = waiter
        if session.healthy and session.free_capacity > 0:
            self._workers.set_idle(session)
        return waiter

    async def release_hold(self, name: str, waiter: object) -> None:
        session = self._workers.sessions.get(name)
        if session is not None and session.waiter is waiter:  # not superseded by a newer call
            session.waiter = None
            self._workers.set_busy(session)

    async def answer(self, name: str, expire_time: float) -> SessionAnswer | None:
        session = self._workers.sessions.get(name)
        if session is None:
            return None
        views = [self._lease_view(self._leases[lease_id], cancelled=False) for lease_id in session.lease_ids]
        for lease_id, (view, _) in list(session.cancelled.items()):
            views.append(view)
            session.cancelled[lease_id] = (view, True)
        return SessionAnswer(session.name, views, expire_time, session.registration.inline_limit, session.sent_blobs)

    async def end_call(self, name: str, expires_at: float) -> None:
        session = self._workers.sessions.get(name)
        if session is not None:
            session.calls_in_progress -= 1
            session.expires_at = expires_at

    async def expired_sessions(self, now: float) -> list[SessionView]:
        return [self._view(s) for s in self._workers.sessions.values() if self._expired(s, now)]

    @staticmethod
    def _expired(session: BotSession, now: float) -> bool:
        return session.calls_in_progress == 0 and session.expires_at < now

    # -- the worker index --------------------------------------------------------

    async def unserved_since(self, requirements: RequirementSet) -> float | None:
        self._workers.know(requirements)
        return self._unserved_since(requirements)

    async def offers(self) -> list[WorkerOffer]:
        return self._workers.offers()

    async def queued_requirements(self) -> list[RequirementSet]:
        return list(self._queues.keys())

    async def fail_queued(self, requirements: RequirementSet, response: re_pb2.ExecuteResponse, now: float) -> None:
        for execution in self._queues.drain(requirements):
            own = re_pb2.ExecuteResponse()
            own.CopyFrom(response)
            self._stop(execution, own, now)

    # -- introspection -------------------------------------------------------------

    def farm(self) -> FarmSnapshot:
        queued = {key.describe(): size for key, size in self._queues.sizes().items()}
        workers = []
        executing = 0
        for session in self._workers.sessions.values():
            running = []
            for lease_id in session.lease_ids:
                lease = self._leases[lease_id]
                execution = self._running[lease.execution_id]
                action = execution.action
                running.append(RunningAction(execution.operations[0] if execution.operations else "",
                                             action.action_digest, action.instance_name, lease.assigned_at))
            executing += len(running)
            registration = session.registration
            workers.append(WorkerView(session.bot_id, session.name, registration.offer.describe(),
                                      registration.capacity, session.healthy, tuple(running)))
        return FarmSnapshot(queued, executing, tuple(sorted(workers)))

    async def queued_count(self) -> int:
        return len(self._queues)

    async def operation_count(self) -> int:
        return len(self._ops)
