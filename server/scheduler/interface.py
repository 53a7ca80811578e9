"""The scheduler seam, split by role as NativeLink does.

Client side: ``submit`` an action under an operation name, ``watch`` it (Execute
and WaitExecution alike), ``cancel``/``get``/``wait``/``list``/``delete``.
Worker side: ``create_session`` and ``update_session`` (report leases, then
long-poll for work). ``tick`` does the time-driven work (session expiry, retention,
grace periods), so tests drive time exactly with an injected clock.

The one implementation is policy/scheduler.py (the decisions) over a
state/interface.py ``SchedulerState`` (what is remembered): in memory today, and
meant to take a Redis-backed state for several replicas. Every method is async
because such a state awaits the network.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.operation import OperationState, PreparedAction, Stage
from server.scheduler.locality import FIFO, Dispatch
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, SessionAnswer


@dataclass(frozen=True)
class SchedulerSettings:
    """Plain values; docs/CONFIG.md [execution] documents each."""

    max_retries: int = 3
    operation_retention: float = 600.0
    bot_session_timeout: float = 60.0
    bot_long_poll_timeout: float = 30.0
    worker_grace: float = 60.0
    progress_interval: float = 20.0
    # A lease running longer than its action's timeout (max_action_timeout for an action
    # without one) plus timeout_grace is ended by the server: its worker may be hung.
    max_action_timeout: float = 7200.0
    timeout_grace: float = 60.0
    dispatch: Dispatch = FIFO  # which bot gets which action (locality.py); a state applies it


@dataclass(frozen=True)
class OperationFilter:
    """ListOperations' filter: conditions that must all hold."""

    stages: frozenset[Stage] | None = None  # the operation's stage is one of these
    done: bool | None = None

    def accepts(self, state: OperationState) -> bool:
        if self.stages is not None and state.stage not in self.stages:
            return False
        return self.done is None or state.done == self.done


class ResultCache(Protocol):
    """Where Execute looks for cached results and stores new ones, with the output
    blobs a bot sent inline in its report."""

    async def lookup(self, instance_name: str, action_digest: Digest) -> re_pb2.ActionResult | None: ...

    async def store(self, instance_name: str, action_digest: Digest, result: re_pb2.ActionResult) -> None: ...

    async def store_blobs(self, instance_name: str, blobs: Mapping[Digest, bytes]) -> None:
        """Write the blobs the instance's CAS lacks; raise the first failure."""


class LogStreamFactory(Protocol):
    """Creates the stdout/stderr streams of a lease (sync: called mid-mutation)."""

    def create_pair(self, parent: str) -> tuple[tuple[str, str], tuple[str, str]]:
        """((stdout read name, write name), (stderr read name, write name))."""

    def finish(self, write_names: Sequence[str], drop_after: float) -> None:
        """Close streams still open and drop them ``drop_after`` seconds from now."""


class Scheduler(ABC):
    # -- client side ---------------------------------------------------------

    @abstractmethod
    def new_operation_name(self, instance_name: str) -> str:
        """A fresh, stable name: ``{instance}/operations/{id}``."""

    @abstractmethod
    async def submit(
        self, operation_name: str, action: PreparedAction, priority: int, owner: str = ""
    ) -> OperationState:
        """Queue ``action`` (or join an identical one in flight) under ``operation_name``,
        which belongs to ``owner`` (a principal, server/auth; "" without authentication).

        FAILED_PRECONDITION if no worker can run it and none has for the grace period.
        """

    @abstractmethod
    def watch(self, operation_name: str, replay: bool = False) -> AsyncIterator[OperationState]:
        """The current state, every stage change after it, and the current state again
        at least every ``progress_interval``; ends after the completed state.
        ``replay`` starts from the operation's first stage instead (Execute, which must
        stream every stage). NOT_FOUND if unknown."""

    @abstractmethod
    async def get(self, operation_name: str) -> OperationState: ...

    @abstractmethod
    async def wait(self, operation_name: str, timeout: float) -> OperationState:
        """The state once done, or after ``timeout`` seconds."""

    @abstractmethod
    async def cancel(self, operation_name: str) -> None:
        """Complete the operation with CANCELLED; stop the execution if nobody else wants it."""

    @abstractmethod
    async def delete(self, operation_name: str) -> None:
        """Forget the operation (the execution goes on)."""

    @abstractmethod
    async def list_operations(
        self, instance_name: str | None, where: OperationFilter, page_size: int, page_token: str
    ) -> tuple[list[OperationState], str]: ...

    # -- worker side ---------------------------------------------------------

    @abstractmethod
    async def create_session(self, registration: BotRegistration, summary: BotSummary | None = None) -> SessionAnswer:
        """``summary``: what the bot holds and how busy it is, if it said (locality dispatch)."""

    @abstractmethod
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
        """Apply the bot's reports (and its summary, if it sent one), then answer with its
        leases, holding the call while there is nothing new (docs/BOTS_PROTOCOL.md section 2)."""

    @abstractmethod
    async def end_session(self, name: str, bot_id: str, reason: str) -> None:
        """The bot is leaving (BOT_TERMINATING, holding nothing): close its session now
        and requeue any lease still counted as its. NOT_FOUND if already closed."""

    # -- housekeeping --------------------------------------------------------

    @abstractmethod
    async def tick(self) -> None:
        """Expire sessions, drop old operations, fail actions past the worker grace."""

    async def aclose(self) -> None:
        """Release resources."""
