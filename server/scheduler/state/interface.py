"""SchedulerState: everything the scheduler remembers, changed by whole transitions.

The policy (policy/scheduler.py) decides; a state keeps queues, executions and
operations, leases, bot sessions and the worker index, and wakes whoever waits on
them. Each method is one transition or one read, complete in itself: the in-memory
state runs each as a plain synchronous step (its coroutines never suspend, so
nothing is ever half-changed and no locks are needed); a Redis-backed state would
run each as one Lua script and carry wake-ups over pub/sub. Between two calls
another caller may act (another task, another replica), so transitions re-check
what they depend on: ``finish_execution`` on a cancelled execution does nothing.

Policy values arrive as arguments (``worker_grace``, ``retry_budget``, the dedup
key, the responses to record), so the state applies them atomically without
knowing why. One is given at construction instead, because every transition that
queues or claims applies it: the dispatch rule (``SchedulerSettings.dispatch``,
locality.py), over what each session's bot said it holds (``BotSummary``) and each
action's input sketch (``PreparedAction.sketch``). Records are named by ids; reads
return snapshots (state/views.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Protocol

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock
from server.scheduler.interface import LogStreamFactory, SchedulerSettings
from server.scheduler.operation import OperationState, PreparedAction
from server.scheduler.platform import PlatformMatcher, RequirementSet, WorkerOffer
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, SessionAnswer
from server.scheduler.farm import FarmSnapshot
from server.scheduler.state.views import (
    DedupKey, Lost, OtherBot, ReportOutcome, RunningLease, SessionView, Unserved,
)


class OperationWatch(ABC):
    """One reader's position in an operation's stage changes (Execute, WaitExecution).

    It follows the operation it was opened on even if the name is deleted meanwhile."""

    @abstractmethod
    async def next(self) -> OperationState | None:
        """The next stage change this watch has not returned yet (for a cancelled
        operation, its final state), or None if there is none yet."""

    @abstractmethod
    async def current(self) -> OperationState:
        """The operation as it is now."""

    @abstractmethod
    def changed(self) -> Awaitable[None]:
        """Resolved at the operation's next change (call it after ``next`` returned None)."""


class SchedulerState(ABC):
    # -- operations and executions ---------------------------------------------

    @abstractmethod
    async def add_operation(
        self, name: str, action: PreparedAction, priority: int, dedup: DedupKey | None, now: float,
        worker_grace: float, owner: str = "",
    ) -> OperationState | Unserved:
        """Add operation ``name``: it joins the unfinished execution with the same
        ``dedup`` key (raising that execution's priority while it is queued), or gets
        a new execution, queued or handed at once to a waiting session that matches
        (with locality dispatch, the one ``locality.choose_bot`` picks; so too when
        ``retry_execution`` and ``close_session`` queue one again). A new execution is refused (``Unserved``) if no connected worker can run it
        and none could for more than ``worker_grace`` seconds.
        INVALID_ARGUMENT if the name exists. ``owner`` is kept with the operation
        (``OperationState.owner``): the principal that made it (server/auth)."""

    @abstractmethod
    async def watch(self, name: str, replay: bool) -> OperationWatch | None:
        """A watch from the operation's current state, or from its first (``replay``)."""

    @abstractmethod
    async def operation(self, name: str) -> OperationState | None: ...

    @abstractmethod
    def operations(self, instance_name: str | None, after: int) -> AsyncIterator[tuple[int, OperationState]]:
        """Operations in creation order with their sequence numbers, those above ``after``."""

    @abstractmethod
    async def cancel_operation(
        self, name: str, response: re_pb2.ExecuteResponse, stop_response: re_pb2.ExecuteResponse, now: float
    ) -> bool:
        """Complete the operation with ``response`` (unless it is done); if no other
        operation wants its execution any more, stop that with ``stop_response``
        (out of its queue, or its lease cancelled and the bot told). False if unknown."""

    @abstractmethod
    async def forget_operation(self, name: str) -> bool:
        """Drop the operation; its execution goes on. False if unknown."""

    @abstractmethod
    async def drop_finished(self, now: float, retention: float) -> None:
        """Drop operations finished ``retention`` seconds or more before ``now``."""

    @abstractmethod
    async def awaits_result(self, execution_id: str) -> bool:
        """Whether the execution still waits for the result of a completed lease
        (not cancelled or failed meanwhile)."""

    @abstractmethod
    async def finish_execution(self, execution_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        """Complete an execution that awaits a result; False (nothing done) otherwise."""

    @abstractmethod
    async def overdue_leases(self, now: float, default_timeout: float, grace: float) -> list[RunningLease]:
        """The leases bots hold now (not completed, cancelled or lost) that have run longer
        than their action's timeout (``default_timeout`` for one without) plus ``grace``.
        The state filters: the policy asks every tick, and most leases are not overdue."""

    @abstractmethod
    async def end_lease(self, lease_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        """Finish the lease's execution with ``response``, take the lease from its session
        and tell its bot to stop it. False (nothing done) if the lease is no longer held."""

    @abstractmethod
    async def retry_execution(self, execution_id: str, note: str, retry_budget: int, now: float) -> Lost | None:
        """Its worker failed it: record ``note`` and queue it again, unless that makes
        more than ``retry_budget`` failures. None (nothing done) if it awaits no result."""

    # -- bot sessions ------------------------------------------------------------

    @abstractmethod
    async def open_session(
        self, name: str, registration: BotRegistration, expires_at: float, summary: BotSummary | None = None
    ) -> None:
        """``summary``: what the bot holds and its load, for locality dispatch (kept per
        session, like the worker index: the state applies ``settings.dispatch``)."""

    @abstractmethod
    async def session_of_bot(self, bot_id: str) -> str | None:
        """The name of the bot's open session."""

    @abstractmethod
    async def session(self, name: str) -> SessionView | None:
        """None once the session is closed."""

    @abstractmethod
    async def close_session(
        self, name: str, note: str, retry_budget: int, now: float, *, if_expired: bool = False
    ) -> list[Lost] | None:
        """Close the session and wake its held call; its leases go back to the queue
        (as ``retry_execution`` with ``note`` does: one ``Lost`` each). With
        ``if_expired``, only if it has no call in progress and expired before ``now``.
        None if nothing was closed."""

    @abstractmethod
    async def report(
        self,
        name: str,
        bot_id: str,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata],
        summary: BotSummary | None = None,
    ) -> ReportOutcome | OtherBot | None:
        """Start a call of bot ``bot_id`` (``OtherBot`` if the session is not its own):
        take its ``summary`` (each field that is not None replaces the session's),
        wake the session's held call (the newer one supersedes it),
        count the call in progress until ``end_call``, and take the bot's word on its
        leases. Leases it reports completed come off the session and are returned for
        the policy to finish; reports of leases the session does not hold are ignored
        (the answer leaves them out, which tells the bot to stop); cancellations the
        bot was told about and no longer lists are forgotten. None if the session is
        closed."""

    @abstractmethod
    async def claim(self, name: str, now: float) -> SessionView | None:
        """Give a healthy session the best queued executions it can run, by
        (priority, arrival), up to its free capacity; with locality dispatch, within
        the best priority, by placement tier, then the one it holds most of
        (locality.choose_placed).
        None if the session is closed."""

    @abstractmethod
    async def hold(self, name: str) -> Awaitable[None]:
        """Mark the session as waiting for work; resolved when it gets some, a lease
        of it is cancelled, it is closed, or a newer call arrives."""

    @abstractmethod
    async def release_hold(self, name: str, waiter: Awaitable[None]) -> None:
        """The held call stopped waiting (unless a newer call holds already)."""

    @abstractmethod
    async def answer(self, name: str, expire_time: float) -> SessionAnswer | None:
        """The session's leases and the cancellations not told yet (now told)."""

    @abstractmethod
    async def end_call(self, name: str, expires_at: float) -> None:
        """A call ended; the session expires at ``expires_at`` unless another call comes."""

    @abstractmethod
    async def expired_sessions(self, now: float) -> list[SessionView]:
        """Sessions with no call in progress whose expiry is before ``now``."""

    # -- the worker index --------------------------------------------------------

    @abstractmethod
    async def unserved_since(self, requirements: RequirementSet) -> float | None:
        """None if a connected worker can run ``requirements``; else when one last
        could (the state's start if never)."""

    @abstractmethod
    async def offers(self) -> list[WorkerOffer]:
        """What the connected workers offer (for messages)."""

    @abstractmethod
    async def queued_requirements(self) -> list[RequirementSet]:
        """Requirement sets with queued executions."""

    @abstractmethod
    async def fail_queued(self, requirements: RequirementSet, response: re_pb2.ExecuteResponse, now: float) -> None:
        """Finish every queued execution of ``requirements`` with ``response``."""

    # -- introspection -------------------------------------------------------------

    @abstractmethod
    def farm(self) -> FarmSnapshot:
        """Queue depth per platform, what executes, the connected workers: for the
        console, the metrics and the activity log, which read it from synchronous code
        (a state that lives elsewhere returns what it last fetched, e.g. at ``tick``)."""

    @abstractmethod
    async def queued_count(self) -> int: ...

    @abstractmethod
    async def operation_count(self) -> int: ...

    async def aclose(self) -> None:
        """Release resources."""


class StateFactory(Protocol):
    """Builds a state for a server (``memory_state``; tests pass others)."""

    def __call__(
        self, matcher: PlatformMatcher, settings: SchedulerSettings, log_streams: LogStreamFactory | None, clock: Clock
    ) -> SchedulerState: ...
