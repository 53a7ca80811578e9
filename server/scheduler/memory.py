"""InMemoryScheduler: the scheduler of one server process.

State changes happen only in plain synchronous methods (the ``_`` helpers); the
async methods await only around them, never halfway through a change, so no locks
are needed. Dispatch is event-driven: a bot holding an UpdateBotSession call waits
on a future that ``_assign`` resolves the moment work arrives.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from google.rpc import code_pb2, status_pb2

from cas.errors import FailedPrecondition, InvalidArgument, NotFound, ReapiError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock, IdFactory, SystemClock, random_id
from server.scheduler.farm import FarmSnapshot, RunningAction, WorkerView
from server.scheduler.interface import (
    LogStreamFactory,
    OperationFilter,
    ResultCache,
    Scheduler,
    SchedulerSettings,
)
from server.scheduler.inline_outputs import take_inline_outputs
from server.scheduler.observer import ExecutionObserver
from server.scheduler.operation import Execution, Operation, OperationState, PreparedAction, Stage, state_of
from server.scheduler.platform import PlatformMatcher, RequirementSet
from server.scheduler.queues import ActionQueues
from server.scheduler.results import build_response, is_cacheable, is_worker_failure
from server.scheduler.sessions import BotRegistration, BotSession, Lease, LeaseReport, LeaseView, SessionAnswer
from server.scheduler.worker_index import WorkerIndex

log = logging.getLogger("reapi.scheduler")

# A call with less time than this before its deadline is answered at once.
MIN_DEADLINE_TO_HOLD = 1.0


def _status(code: int, message: str) -> re_pb2.ExecuteResponse:
    return re_pb2.ExecuteResponse(status=status_pb2.Status(code=code, message=message))


class InMemoryScheduler(Scheduler):
    def __init__(
        self,
        matcher: PlatformMatcher,
        settings: SchedulerSettings = SchedulerSettings(),
        *,
        results: ResultCache | None = None,
        log_streams: LogStreamFactory | None = None,
        clock: Clock | None = None,
        new_id: IdFactory = random_id,
        observer: ExecutionObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.results = results
        self.log_streams = log_streams
        self.clock = clock or SystemClock()
        self.new_id = new_id
        self.matcher = matcher
        self._ops: dict[str, Operation] = {}
        self._inflight: dict[tuple[str, object], Execution] = {}
        self._queues = ActionQueues()
        self._workers = WorkerIndex(matcher, self.clock.now())
        self._sessions_by_bot: dict[str, BotSession] = {}
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._seq = 0

    # ======================================================================
    # client side
    # ======================================================================

    def new_operation_name(self, instance_name: str) -> str:
        prefix = f"{instance_name}/" if instance_name else ""
        return f"{prefix}operations/{self.new_id()}"

    async def submit(self, operation_name: str, action: PreparedAction, priority: int) -> OperationState:
        return state_of(self._submit(operation_name, action, priority))

    def _submit(self, name: str, action: PreparedAction, priority: int) -> Operation:
        if name in self._ops:
            raise InvalidArgument(f"operation {name} already exists")
        now = self.clock.now()
        self._workers.know(action.requirements)
        self._seq += 1
        execution = None if action.do_not_cache else self._inflight.get(self._dedup_key(action))
        if execution is not None:
            if priority < execution.priority and execution.stage is Stage.QUEUED:
                self._queues.discard(execution)
                execution.priority = priority
                self._queues.push(execution)
            operation = Operation(name, execution, self._seq, first_event=len(execution.history) - 1)
        else:
            self._check_runnable(action.requirements, now)
            execution = Execution(
                id=self.new_id(), action=action, priority=priority, seq=self._seq, queued_at=now,
                retries_left=self.settings.max_retries,
            )
            if not action.do_not_cache:
                self._inflight[self._dedup_key(action)] = execution
            operation = Operation(name, execution, self._seq, first_event=0)
            execution.record(Stage.QUEUED)
            self._enqueue(execution)
        execution.operations.append(name)
        self._ops[name] = operation
        return operation

    @staticmethod
    def _dedup_key(action: PreparedAction) -> tuple[str, object]:
        return (action.instance_name, action.action_digest)

    def _check_runnable(self, key: RequirementSet, now: float) -> None:
        if self._workers.can_run(key):
            return
        waited = now - self._workers.last_seen(key)
        if waited <= self.settings.worker_grace:
            return
        raise FailedPrecondition(
            f"no worker can run this action: {self.matcher.explain(key, self._workers.offers())}; "
            f"none has been connected for {waited:.0f}s (worker_grace is {self.settings.worker_grace:g}s). "
            "Start a worker that offers these properties, or change the action's platform"
        )

    async def watch(self, operation_name: str, replay: bool = False) -> AsyncIterator[OperationState]:
        operation = self._operation(operation_name)
        index = operation.first_event if replay else len(operation.execution.history) - 1
        while True:
            execution = operation.execution
            if operation.cancelled_response is not None:
                yield state_of(operation)
                return
            history = execution.history
            if index < len(history):
                event = history[index]
                index += 1
                yield state_of(operation, event)
                if event.stage is Stage.COMPLETED:
                    return
                continue
            try:
                await asyncio.wait_for(execution.changed(), self.settings.progress_interval)
            except TimeoutError:
                yield state_of(operation)  # progress, so clients with deadlines stay alive

    async def get(self, operation_name: str) -> OperationState:
        return state_of(self._operation(operation_name))

    async def wait(self, operation_name: str, timeout: float) -> OperationState:
        operation = self._operation(operation_name)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not operation.done and loop.time() < end:
            try:
                await asyncio.wait_for(operation.execution.changed(), end - loop.time())
            except TimeoutError:
                break
        return state_of(operation)

    async def cancel(self, operation_name: str) -> None:
        self._cancel(self._operation(operation_name))

    def _cancel(self, operation: Operation) -> None:
        if operation.done:
            return
        now = self.clock.now()
        operation.cancelled_response = _status(code_pb2.CANCELLED, f"operation {operation.name} was cancelled")
        operation.finished_at = now
        self._finished.append((now, operation.name))
        execution = operation.execution
        if operation.name in execution.operations:
            execution.operations.remove(operation.name)
        if not execution.operations:
            self._stop(execution, _status(code_pb2.CANCELLED, "cancelled: every client cancelled its operation"))
        execution.notify()

    async def delete(self, operation_name: str) -> None:
        operation = self._operation(operation_name)
        del self._ops[operation_name]
        if operation_name in operation.execution.operations:
            operation.execution.operations.remove(operation_name)

    async def list_operations(
        self, instance_name: str | None, where: OperationFilter, page_size: int, page_token: str
    ) -> tuple[list[OperationState], str]:
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument(f"page_token {page_token!r} was not issued by this server") from None
        page_size = page_size if page_size > 0 else 1000
        out: list[tuple[int, OperationState]] = []
        for operation in sorted(self._ops.values(), key=lambda o: o.seq):
            if operation.seq <= after:
                continue
            if instance_name is not None and operation.execution.action.instance_name != instance_name:
                continue
            state = state_of(operation)
            if where.accepts(state):
                if len(out) == page_size:
                    return [s for _, s in out], str(out[-1][0])
                out.append((operation.seq, state))
        return [s for _, s in out], ""

    def _operation(self, name: str) -> Operation:
        operation = self._ops.get(name)
        if operation is None:
            raise NotFound(f"operation {name!r} is unknown (finished operations are kept for "
                           f"{self.settings.operation_retention:g}s)")
        return operation

    # ======================================================================
    # worker side
    # ======================================================================

    async def create_session(self, registration: BotRegistration) -> SessionAnswer:
        if registration.capacity < 1:
            raise InvalidArgument(f"bot {registration.bot_id}: capacity must be at least 1, not {registration.capacity}")
        now = self.clock.now()
        old = self._sessions_by_bot.get(registration.bot_id)
        if old is not None:
            self._close_session(old, f"bot {registration.bot_id} started a new session")
        prefix = f"{registration.instance_name}/" if registration.instance_name else ""
        session = BotSession(
            name=f"{prefix}{self.new_id()}", registration=registration,
            expires_at=now + self.settings.bot_session_timeout, healthy=registration.healthy,
        )
        self._sessions_by_bot[registration.bot_id] = session
        self._workers.add(session)
        self._fill(session)
        return self._answer(session)

    async def update_session(
        self,
        name: str,
        bot_id: str,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata],
        deadline_remaining: float | None,
    ) -> SessionAnswer:
        session = self._session(name, bot_id)
        session.wake()  # a newer call supersedes a held one
        session.calls_in_progress += 1
        try:
            listed, completions = self._apply_reports(session, healthy, reports, partial_metadata)
            if completions:
                # The leases are detached already: finish them even if the bot hangs up
                # now, or their executions would wait forever for a result we dropped.
                await asyncio.shield(self._complete_all(completions))
            if session.closed:
                raise NotFound(f"bot session {name} was closed; create a new one")
            self._fill(session)
            hold = self._hold_time(session, listed, deadline_remaining)
            if hold > 0:
                await self._hold(session, hold)
                if session.closed:
                    raise NotFound(f"bot session {name} was closed; create a new one")
            return self._answer(session)
        finally:
            session.calls_in_progress -= 1
            session.expires_at = self.clock.now() + self.settings.bot_session_timeout

    async def end_session(self, name: str, bot_id: str, reason: str) -> None:
        self._close_session(self._session(name, bot_id), reason)

    def _session(self, name: str, bot_id: str) -> BotSession:
        session = self._workers.sessions.get(name)
        if session is None or session.closed:
            raise NotFound(f"bot session {name!r} is unknown or expired; create a new one")
        if session.bot_id != bot_id:
            raise InvalidArgument(f"bot session {name!r} belongs to bot {session.bot_id!r}, not {bot_id!r}")
        return session

    def _apply_reports(
        self,
        session: BotSession,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata],
    ) -> tuple[set[str], list[tuple[Lease, LeaseReport]]]:
        """Take the bot's word on its leases (sync). Returns the ids it holds and its completions."""
        session.healthy = healthy
        if not healthy:
            self._workers.set_busy(session)
        listed: set[str] = set()
        completions = []
        for report in reports:
            lease = session.leases.get(report.lease_id)
            if lease is None:
                continue  # unknown, cancelled or reassigned: leaving it out tells the bot to stop
            if report.completed:
                del session.leases[lease.id]
                lease.execution.lease = None
                completions.append((lease, report))
            else:
                listed.add(lease.id)
        reported_ids = {r.lease_id for r in reports}
        for lease_id, (lease, sent) in list(session.cancelled.items()):
            if sent and lease_id not in reported_ids:
                del session.cancelled[lease_id]
        for lease_id, metadata in partial_metadata.items():
            lease = session.leases.get(lease_id)
            if lease is not None:
                lease.execution.partial_metadata = metadata
        return listed, completions

    async def _complete_all(self, completions: list[tuple[Lease, LeaseReport]]) -> None:
        for lease, report in completions:
            await self._complete(lease, report)

    async def _complete(self, lease: Lease, report: LeaseReport) -> None:
        execution = lease.execution
        self._finish_streams(lease)
        if execution.stage is not Stage.EXECUTING or execution.lease is not None:
            return  # cancelled meanwhile
        status = report.status or status_pb2.Status()
        if is_worker_failure(status):
            self._requeue(execution, lease, f"it reported {code_pb2.Code.Name(status.code)}: {status.message}")
            return
        response = build_response(report, lease, execution.queued_at, self.clock.now())
        if self.observer is not None:
            self.observer.finished(execution.action, response)
        if self.results is not None and lease.session.registration.inline_limit > 0:
            # Only bots that agreed on inline blobs: others' inline fields reach the client as sent.
            try:
                blobs = take_inline_outputs(response.result, execution.action.action_digest.function)
                if blobs:
                    await self.results.store_blobs(execution.action.instance_name, blobs)
            except ReapiError as err:
                if execution.stage is Stage.EXECUTING and execution.lease is None:
                    self._requeue(execution, lease, f"its inline outputs could not be stored: {err.message}")
                return
        if self.results is not None and not execution.action.do_not_cache and is_cacheable(response):
            action = execution.action
            try:
                await self.results.store(action.instance_name, action.action_digest, response.result)
            except Exception as err:  # noqa: BLE001 - the client still gets its result, told why
                if not isinstance(err, ReapiError):
                    log.exception("storing the result of %s failed", action.action_digest)
                log.warning("result of %s not cached: %s", action.action_digest, err)
                response.message = f"{response.message}; the result was not cached: {err}".lstrip("; ")
        if execution.stage is Stage.EXECUTING and execution.lease is None:
            self._finish(execution, response)

    def _hold_time(self, session: BotSession, listed: set[str], deadline_remaining: float | None) -> float:
        if any(lease_id not in listed for lease_id in session.leases):
            return 0.0
        if any(not sent for _, sent in session.cancelled.values()):
            return 0.0
        if not session.registration.hold_when_busy and (session.leases or not session.healthy):
            return 0.0
        hold = self.settings.bot_long_poll_timeout
        if deadline_remaining is not None:
            if deadline_remaining < MIN_DEADLINE_TO_HOLD:
                return 0.0
            hold = min(hold, 0.8 * deadline_remaining)
        return hold

    async def _hold(self, session: BotSession, timeout: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        session.waiter = waiter
        if session.healthy and session.free_capacity > 0:
            self._workers.set_idle(session)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            if session.waiter is waiter:  # not superseded by a newer call
                session.waiter = None
                self._workers.set_busy(session)

    def _answer(self, session: BotSession) -> SessionAnswer:
        views = [self._lease_view(lease, cancelled=False) for lease in session.leases.values()]
        for lease_id, (lease, _) in list(session.cancelled.items()):
            views.append(self._lease_view(lease, cancelled=True))
            session.cancelled[lease_id] = (lease, True)
        return SessionAnswer(session.name, views, self.clock.now() + self.settings.bot_session_timeout,
                             session.registration.inline_limit, session.sent_blobs)

    @staticmethod
    def _lease_view(lease: Lease, cancelled: bool) -> LeaseView:
        action = lease.execution.action
        return LeaseView(
            lease_id=lease.id, cancelled=cancelled, instance_name=action.instance_name,
            action_digest_proto=action.action_digest.to_proto(), digest_function=action.action_digest.function,
            action_bytes=action.action_bytes, stdout_write_name=lease.stdout_write_name,
            stderr_write_name=lease.stderr_write_name,
        )

    # ======================================================================
    # synchronous state changes
    # ======================================================================

    def _enqueue(self, execution: Execution) -> None:
        session = self._workers.first_idle(execution.action.requirements)
        if session is not None:
            self._assign(execution, session)
        else:
            self._queues.push(execution)

    def _fill(self, session: BotSession) -> None:
        if not session.healthy or session.closed:
            return
        while session.free_capacity > 0:
            execution = self._queues.pop_best(session.matching_keys)
            if execution is None:
                return
            self._assign(execution, session)

    def _assign(self, execution: Execution, session: BotSession) -> None:
        lease = Lease(self.new_id(), execution, session, self.clock.now())
        if self.log_streams is not None:
            parent = execution.action.instance_name
            parent = f"{parent}/executions/{execution.id}" if parent else f"executions/{execution.id}"
            (out, out_w), (err, err_w) = self.log_streams.create_pair(parent)
            execution.stdout_name, execution.stderr_name = out, err
            lease.stdout_write_name, lease.stderr_write_name = out_w, err_w
        session.leases[lease.id] = lease
        execution.lease = lease
        execution.partial_metadata = None
        execution.record(Stage.EXECUTING)
        if session.free_capacity <= 0:
            self._workers.set_busy(session)
        session.wake()

    def _requeue(self, execution: Execution, lease: Lease, reason: str) -> None:
        if self.observer is not None:
            self.observer.retried(execution.action, f"{lease.session.bot_id} lost it: {reason}")
        execution.lease = None
        execution.failed_workers.append(f"{lease.session.bot_id} ({reason})")
        if execution.retries_left <= 0:
            tried = "; ".join(execution.failed_workers)
            self._finish(execution, _status(
                code_pb2.UNAVAILABLE,
                f"action {execution.action.action_digest} was lost by {len(execution.failed_workers)} workers, "
                f"more than its retry budget of {self.settings.max_retries} allows: {tried}",
            ))
            return
        execution.retries_left -= 1
        execution.stdout_name = execution.stderr_name = ""
        execution.record(Stage.QUEUED)
        self._enqueue(execution)

    def _stop(self, execution: Execution, response: re_pb2.ExecuteResponse) -> None:
        """End an execution early (cancellation, grace expired)."""
        if execution.done:
            return
        if execution.stage is Stage.QUEUED:
            self._queues.discard(execution)
        lease = execution.lease
        if lease is not None:
            session = lease.session
            session.leases.pop(lease.id, None)
            session.cancelled[lease.id] = (lease, False)
            self._finish_streams(lease)
            session.wake()
        self._finish(execution, response)

    def _finish(self, execution: Execution, response: re_pb2.ExecuteResponse) -> None:
        now = self.clock.now()
        execution.lease = None
        execution.response = response
        execution.finished_at = now
        if self._inflight.get(self._dedup_key(execution.action)) is execution:
            del self._inflight[self._dedup_key(execution.action)]
        for name in execution.operations:
            operation = self._ops.get(name)
            if operation is not None and operation.finished_at is None:
                operation.finished_at = now
                self._finished.append((now, name))
        execution.record(Stage.COMPLETED)

    def _finish_streams(self, lease: Lease) -> None:
        if self.log_streams is not None and lease.stdout_write_name:
            self.log_streams.finish([lease.stdout_write_name, lease.stderr_write_name],
                                    self.settings.operation_retention)

    def _close_session(self, session: BotSession, reason: str) -> None:
        session.closed = True
        if self._sessions_by_bot.get(session.bot_id) is session:
            del self._sessions_by_bot[session.bot_id]
        self._workers.remove(session, self.clock.now())
        leases = list(session.leases.values())
        session.leases.clear()
        session.cancelled.clear()
        for lease in leases:
            self._finish_streams(lease)
            self._requeue(lease.execution, lease, reason)
        session.wake()
        log.info("closed bot session %s: %s", session.name, reason)

    # ======================================================================
    # housekeeping
    # ======================================================================

    async def tick(self) -> None:
        now = self.clock.now()
        for session in list(self._workers.sessions.values()):
            if session.calls_in_progress == 0 and session.expires_at < now:
                self._close_session(
                    session,
                    f"its bot session expired (no UpdateBotSession for {self.settings.bot_session_timeout:g}s)",
                )
        retention = self.settings.operation_retention
        while self._finished and self._finished[0][0] + retention <= now:
            _, name = self._finished.popleft()
            self._ops.pop(name, None)
        for key in list(self._queues.keys()):
            if self._workers.can_run(key):
                continue
            waited = now - self._workers.last_seen(key)
            if waited > self.settings.worker_grace:
                reason = self.matcher.explain(key, self._workers.offers())
                for execution in self._queues.drain(key):
                    self._stop(execution, _status(
                        code_pb2.FAILED_PRECONDITION,
                        f"no worker can run this action: {reason}; none has been connected for {waited:.0f}s "
                        f"(worker_grace is {self.settings.worker_grace:g}s)",
                    ))

    # -- introspection for tests, metrics and benchmarks ----------------------

    def farm(self) -> FarmSnapshot:
        queued = {key.describe(): size for key, size in self._queues._sizes.items() if size}
        workers = []
        executing = 0
        for session in self._workers.sessions.values():
            running = tuple(
                RunningAction(lease.execution.operations[0] if lease.execution.operations else "",
                              lease.execution.action.action_digest, lease.execution.action.instance_name,
                              lease.assigned_at)
                for lease in session.leases.values())
            executing += len(running)
            workers.append(WorkerView(session.bot_id, session.name, session.registration.offer.describe(),
                                      session.registration.capacity, session.healthy, running))
        return FarmSnapshot(queued, executing, tuple(sorted(workers)))

    @property
    def queued(self) -> int:
        return len(self._queues)

    @property
    def operation_count(self) -> int:
        return len(self._ops)

    @property
    def session_count(self) -> int:
        return len(self._workers.sessions)
