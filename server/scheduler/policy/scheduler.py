"""SchedulingPolicy: the one Scheduler, its decisions written once over any state.

The policy decides; the state (state/interface.py) remembers and applies whole
transitions. Decided here: names and ids, which actions share an execution (same
instance and action digest, unless do_not_cache), the worker grace period and its
message, the retry budget (completion.py), which statuses are worker failures and
what a result turns into, how long a bot's call is held, when sessions expire, how
long finished operations are kept, and every error a client or bot sees.

Time comes from an injected clock; ``tick`` does the time-driven work, so tests move
time exactly. The methods await only the state and the stores, between transitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from collections.abc import Set as AbstractSet

from google.rpc import code_pb2

from cas.errors import FailedPrecondition, InvalidArgument, NotFound
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock, IdFactory, SystemClock, random_id
from server.scheduler.farm import FarmSnapshot
from server.scheduler.interface import OperationFilter, ResultCache, Scheduler, SchedulerSettings
from server.scheduler.observer import ExecutionObserver
from server.scheduler.operation import OperationState, PreparedAction
from server.scheduler.platform import PlatformMatcher
from server.scheduler.policy.completion import Completion
from server.scheduler.results import status_response
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, SessionAnswer
from server.scheduler.state.interface import OperationWatch, SchedulerState
from server.scheduler.state.views import OtherBot, SessionView, Unserved

log = logging.getLogger("reapi.scheduler")

# A call with less time than this before its deadline is answered at once.
MIN_DEADLINE_TO_HOLD = 1.0


class SchedulingPolicy(Scheduler):
    def __init__(
        self,
        state: SchedulerState,
        matcher: PlatformMatcher,
        settings: SchedulerSettings = SchedulerSettings(),
        *,
        results: ResultCache | None = None,
        clock: Clock | None = None,
        new_id: IdFactory = random_id,
        observer: ExecutionObserver | None = None,
    ) -> None:
        self.state = state
        self.matcher = matcher
        self.settings = settings
        self.clock = clock or SystemClock()
        self.new_id = new_id
        self.completion = Completion(state, settings, results, self.clock, observer)

    # ======================================================================
    # client side
    # ======================================================================

    def new_operation_name(self, instance_name: str) -> str:
        prefix = f"{instance_name}/" if instance_name else ""
        return f"{prefix}operations/{self.new_id()}"

    async def submit(
        self, operation_name: str, action: PreparedAction, priority: int, owner: str = ""
    ) -> OperationState:
        dedup = None if action.do_not_cache else (action.instance_name, action.action_digest)
        now = self.clock.now()
        grace = self.settings.worker_grace
        added = await self.state.add_operation(operation_name, action, priority, dedup, now, grace, owner)
        if isinstance(added, Unserved):
            explanation = self.matcher.explain(action.requirements, await self.state.offers())
            raise FailedPrecondition(
                f"no worker can run this action: {explanation}; "
                f"none has been connected for {now - added.since:.0f}s (worker_grace is {grace:g}s). "
                "Start a worker that offers these properties, or change the action's platform"
            )
        return added

    async def watch(self, operation_name: str, replay: bool = False) -> AsyncIterator[OperationState]:
        watch = await self._watch(operation_name, replay)
        while True:
            state = await watch.next()
            if state is not None:
                yield state
                if state.done:
                    return
                continue
            try:
                await asyncio.wait_for(watch.changed(), self.settings.progress_interval)
            except TimeoutError:
                yield await watch.current()  # progress, so clients with deadlines stay alive

    async def get(self, operation_name: str) -> OperationState:
        state = await self.state.operation(operation_name)
        if state is None:
            raise self._unknown(operation_name)
        return state

    async def wait(self, operation_name: str, timeout: float) -> OperationState:
        watch = await self._watch(operation_name, replay=False)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not (await watch.current()).done and loop.time() < end:
            try:
                await asyncio.wait_for(watch.changed(), end - loop.time())
            except TimeoutError:
                break
        return await watch.current()

    async def cancel(self, operation_name: str) -> None:
        found = await self.state.cancel_operation(
            operation_name,
            status_response(code_pb2.CANCELLED, f"operation {operation_name} was cancelled"),
            status_response(code_pb2.CANCELLED, "cancelled: every client cancelled its operation"),
            self.clock.now(),
        )
        if not found:
            raise self._unknown(operation_name)

    async def delete(self, operation_name: str) -> None:
        if not await self.state.forget_operation(operation_name):
            raise self._unknown(operation_name)

    async def list_operations(
        self, instance_name: str | None, where: OperationFilter, page_size: int, page_token: str
    ) -> tuple[list[OperationState], str]:
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument(f"page_token {page_token!r} was not issued by this server") from None
        page_size = page_size if page_size > 0 else 1000
        out: list[tuple[int, OperationState]] = []
        async for seq, state in self.state.operations(instance_name, after):
            if where.accepts(state):
                if len(out) == page_size:
                    return [s for _, s in out], str(out[-1][0])
                out.append((seq, state))
        return [s for _, s in out], ""

    async def _watch(self, name: str, replay: bool) -> OperationWatch:
        watch = await self.state.watch(name, replay)
        if watch is None:
            raise self._unknown(name)
        return watch

    def _unknown(self, name: str) -> NotFound:
        return NotFound(f"operation {name!r} is unknown (finished operations are kept for "
                        f"{self.settings.operation_retention:g}s)")

    # ======================================================================
    # worker side
    # ======================================================================

    async def create_session(self, registration: BotRegistration, summary: BotSummary | None = None) -> SessionAnswer:
        bot_id = registration.bot_id
        if registration.capacity < 1:
            raise InvalidArgument(f"bot {bot_id}: capacity must be at least 1, not {registration.capacity}")
        now = self.clock.now()
        old = await self.state.session_of_bot(bot_id)
        if old is not None:
            await self._close_session(old, bot_id, f"bot {bot_id} started a new session", now)
        prefix = f"{registration.instance_name}/" if registration.instance_name else ""
        name = f"{prefix}{self.new_id()}"
        await self.state.open_session(name, registration, now + self.settings.bot_session_timeout, summary)
        await self.state.claim(name, self.clock.now())
        return await self._answer(name)

    async def update_session(
        self,
        name: str,
        bot_id: str,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata],
        deadline_remaining: float | None,
        summary: BotSummary | None = None,
    ) -> SessionAnswer:
        outcome = await self.state.report(name, bot_id, healthy, reports, partial_metadata, summary)
        if outcome is None:
            raise self._unknown_session(name)
        if isinstance(outcome, OtherBot):
            raise self._other_bot(name, outcome.owner, bot_id)
        try:
            if outcome.completed:
                # The leases are off the session already: finish them even if the bot hangs
                # up now, or their executions would wait forever for a result we dropped.
                await asyncio.shield(self.completion.complete_all(outcome.completed))
            session = await self.state.claim(name, self.clock.now())
            if session is None:
                raise self._closed(name)
            hold = self._hold_time(session, outcome.listed, deadline_remaining)
            if hold > 0:
                await self._hold(name, hold)
            return await self._answer(name)  # NOT_FOUND if the session was closed meanwhile
        finally:
            await self.state.end_call(name, self.clock.now() + self.settings.bot_session_timeout)

    async def end_session(self, name: str, bot_id: str, reason: str) -> None:
        session = await self.state.session(name)
        if session is None:
            raise self._unknown_session(name)
        if session.bot_id != bot_id:
            raise self._other_bot(name, session.bot_id, bot_id)
        await self._close_session(name, bot_id, reason, self.clock.now())

    def _hold_time(self, session: SessionView, listed: AbstractSet[str], deadline_remaining: float | None) -> float:
        """Hold the call only while the bot knows everything: no new lease, no untold
        cancellation, none of its leases missing from its report."""
        if any(lease_id not in listed for lease_id in session.lease_ids):
            return 0.0
        if session.untold_cancellations:
            return 0.0
        if not session.registration.hold_when_busy and (session.lease_ids or not session.healthy):
            return 0.0
        hold = self.settings.bot_long_poll_timeout
        if deadline_remaining is not None:
            if deadline_remaining < MIN_DEADLINE_TO_HOLD:
                return 0.0
            hold = min(hold, 0.8 * deadline_remaining)
        return hold

    async def _hold(self, name: str, timeout: float) -> None:
        waiter = await self.state.hold(name)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            await self.state.release_hold(name, waiter)

    async def _answer(self, name: str) -> SessionAnswer:
        answer = await self.state.answer(name, self.clock.now() + self.settings.bot_session_timeout)
        if answer is None:
            raise self._closed(name)
        return answer

    async def _close_session(self, name: str, bot_id: str, reason: str, now: float, if_expired: bool = False) -> None:
        note = Completion.failure_note(bot_id, reason)
        lost = await self.state.close_session(name, note, self.settings.max_retries, now, if_expired=if_expired)
        if lost is None:
            return
        await self.completion.handle_lost(lost, bot_id, reason)
        log.info("closed bot session %s: %s", name, reason)

    @staticmethod
    def _unknown_session(name: str) -> NotFound:
        return NotFound(f"bot session {name!r} is unknown or expired; create a new one")

    @staticmethod
    def _other_bot(name: str, owner: str, bot_id: str) -> InvalidArgument:
        return InvalidArgument(f"bot session {name!r} belongs to bot {owner!r}, not {bot_id!r}")

    @staticmethod
    def _closed(name: str) -> NotFound:
        return NotFound(f"bot session {name} was closed; create a new one")

    # ======================================================================
    # housekeeping
    # ======================================================================

    async def tick(self) -> None:
        now = self.clock.now()
        timeout = self.settings.bot_session_timeout
        for session in await self.state.expired_sessions(now):
            reason = f"its bot session expired (no UpdateBotSession for {timeout:g}s)"
            await self._close_session(session.name, session.bot_id, reason, now, if_expired=True)
        await self.state.drop_finished(now, self.settings.operation_retention)
        await self._end_overdue_leases(now)
        grace = self.settings.worker_grace
        for requirements in await self.state.queued_requirements():
            since = await self.state.unserved_since(requirements)
            if since is None or now - since <= grace:
                continue
            waited = now - since
            reason = self.matcher.explain(requirements, await self.state.offers())
            await self.state.fail_queued(requirements, status_response(
                code_pb2.FAILED_PRECONDITION,
                f"no worker can run this action: {reason}; none has been connected for {waited:.0f}s "
                f"(worker_grace is {grace:g}s)",
            ), now)

    async def _end_overdue_leases(self, now: float) -> None:
        """A lease that outlived its action's timeout plus a grace period: its bot may
        be hung while its session stays alive, so the server ends the execution
        (DEADLINE_EXCEEDED to every client) and tells the bot to kill it."""
        grace = self.settings.timeout_grace
        for lease in await self.state.overdue_leases(now, self.settings.max_action_timeout, grace):
            timeout = lease.action.timeout or self.settings.max_action_timeout
            running = now - lease.assigned_at
            what = "its timeout" if lease.action.timeout else "max_action_timeout, as it sets no timeout"
            message = (f"the action ran {running:.0f}s on worker {lease.bot_id}, past {what} ({timeout:g}s) plus "
                       f"the server's timeout_grace ({grace:g}s); the server ended it and told the worker to stop it")
            if await self.state.end_lease(lease.lease_id, status_response(code_pb2.DEADLINE_EXCEEDED, message), now):
                log.warning("action %s: %s", lease.action.action_digest, message)

    def farm(self) -> FarmSnapshot:
        """The farm now (console, metrics, the activity log): see SchedulerState.farm."""
        return self.state.farm()

    async def aclose(self) -> None:
        await self.state.aclose()
