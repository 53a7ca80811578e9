"""The in-memory state's tables, and the synchronous steps its transitions are made of
(those that choose which bot gets which execution are in placement.py).

Each step changes several tables at once and leaves them consistent; none awaits.
MemoryState (state.py) builds the SchedulerState transitions from them.
"""

from __future__ import annotations

import collections

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock, IdFactory, SystemClock, random_id
from server.scheduler.interface import LogStreamFactory
from server.scheduler.locality import FIFO, Dispatch
from server.scheduler.operation import Stage
from server.scheduler.platform import PlatformMatcher, RequirementSet
from server.scheduler.sessions import LeaseView
from server.scheduler.state.memory.placement import MemoryPlacement
from server.scheduler.state.memory.queues import ActionQueues
from server.scheduler.state.memory.records import BotSession, Execution, Lease, Operation
from server.scheduler.state.memory.worker_index import WorkerIndex
from server.scheduler.state.views import DedupKey, Lost, SessionView


class MemoryTables(MemoryPlacement):
    def __init__(
        self,
        matcher: PlatformMatcher,
        started_at: float,
        *,
        log_streams: LogStreamFactory | None = None,
        stream_retention: float = 600.0,
        new_id: IdFactory = random_id,
        dispatch: Dispatch = FIFO,
        clock: Clock | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._clock = clock or SystemClock()  # for the steps a timer takes (dispatch waits)
        self._log_streams = log_streams
        self._stream_retention = stream_retention  # finished log streams are dropped after it
        self._new_id = new_id
        self._ops: dict[str, Operation] = {}
        # Executions out of their queue and not finished (leased, or awaiting a result), by
        # id: what leases and results name. Queued ones need no entry (100,000 may wait).
        self._running: dict[str, Execution] = {}
        self._inflight: dict[DedupKey, Execution] = {}
        self._leases: dict[str, Lease] = {}
        self._queues = ActionQueues()
        self._workers = WorkerIndex(matcher, started_at)
        self._sessions_by_bot: dict[str, BotSession] = {}
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._seq = 0

    def _unserved_since(self, key: RequirementSet) -> float | None:
        return None if self._workers.can_run(key) else self._workers.last_seen(key)

    @staticmethod
    def _awaits_result(execution: Execution) -> bool:
        return execution.stage is Stage.EXECUTING and execution.lease_id is None

    def _assign(self, execution: Execution, session: BotSession, now: float) -> None:
        lease = Lease(self._new_id(), execution.id, session.name, now)
        if self._log_streams is not None:
            parent = execution.action.instance_name
            parent = f"{parent}/executions/{execution.id}" if parent else f"executions/{execution.id}"
            (out, out_w), (err, err_w) = self._log_streams.create_pair(parent)
            execution.stdout_name, execution.stderr_name = out, err
            lease.stdout_write_name, lease.stderr_write_name = out_w, err_w
        self._leases[lease.id] = lease
        self._running[execution.id] = execution
        session.lease_ids[lease.id] = None
        if execution.awaited is not session and not self._own_work(execution, session):
            session.given += 1  # work other than what waits for it or it holds: it moved on (placement.py)
        session.expect(execution.action.sketch)
        execution.lease_id = lease.id
        execution.partial_metadata = None
        execution.record(Stage.EXECUTING)
        if session.free_capacity <= 0:
            self._workers.set_busy(session)
            self._workers.clear_returning(session)
        session.wake()
        self._holder_progressed(session)

    def _requeue(self, execution: Execution, note: str, retry_budget: int, now: float) -> Lost:
        """Queue an execution whose lease ended without a result, budget permitting."""
        execution.lease_id = None
        execution.failed_workers.append(note)
        if len(execution.failed_workers) > retry_budget:
            return Lost(execution.id, execution.action, tuple(execution.failed_workers), requeued=False)
        del self._running[execution.id]
        execution.stdout_name = execution.stderr_name = ""
        execution.record(Stage.QUEUED)
        self._enqueue(execution, now)
        return Lost(execution.id, execution.action, tuple(execution.failed_workers), requeued=True)

    def _stop(self, execution: Execution, response: re_pb2.ExecuteResponse, now: float) -> None:
        """End an execution early (cancellation, grace expired); its bot is told."""
        if execution.done:
            return
        if execution.stage is Stage.QUEUED:
            self._queues.discard(execution)
        if execution.lease_id is not None:
            lease = self._leases.pop(execution.lease_id)
            session = self._workers.sessions[lease.session_name]  # closing a session takes its leases
            del session.lease_ids[lease.id]
            session.cancelled[lease.id] = (self._lease_view(lease, cancelled=True), False)
            self._finish_streams(lease)
            session.wake()
        self._finish(execution, response, now)

    def _finish(self, execution: Execution, response: re_pb2.ExecuteResponse, now: float) -> None:
        execution.lease_id = None
        execution.response = response
        execution.finished_at = now
        key = execution.dedup_key
        if key is not None:
            if self._inflight.get(key) is execution:
                del self._inflight[key]
            execution.dedup_key = None  # a finished execution is kept for retention; its key need not be
        self._running.pop(execution.id, None)
        for name in execution.operations:
            operation = self._ops.get(name)
            if operation is not None and operation.finished_at is None:
                operation.finished_at = now
                self._finished.append((now, name))
        execution.record(Stage.COMPLETED)

    def _finish_streams(self, lease: Lease) -> None:
        if self._log_streams is not None and lease.stdout_write_name:
            self._log_streams.finish([lease.stdout_write_name, lease.stderr_write_name], self._stream_retention)

    def _lease_view(self, lease: Lease, cancelled: bool) -> LeaseView:
        action = self._running[lease.execution_id].action
        return LeaseView(
            lease_id=lease.id, cancelled=cancelled, instance_name=action.instance_name,
            action_digest_proto=action.action_digest.to_proto(), digest_function=action.action_digest.function,
            action_bytes=action.action_bytes, stdout_write_name=lease.stdout_write_name,
            stderr_write_name=lease.stderr_write_name,
        )

    @staticmethod
    def _view(session: BotSession) -> SessionView:
        return SessionView(
            session.name, session.registration, session.healthy, tuple(session.lease_ids),
            bool(session.cancelled) and any(not told for _, told in session.cancelled.values()),
            session.waiter is not None,
        )
