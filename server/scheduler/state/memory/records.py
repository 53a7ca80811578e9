"""The in-memory state's records: executions, operations, leases and bot sessions.

Mutable and private to MemoryState, which changes them only in its synchronous
transitions. Records point at each other by id, looked up in the state's tables: a
lease names its execution and its session, an execution its lease, a session its
leases. Only an operation holds its execution itself (it is the handle on it), as
does a queue entry. Slotted: 100,000 queued actions must stay cheap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.change_signal import ChangeSignal
from server.scheduler.input_cache import SentBlobs
from server.scheduler.locality import EXPECTED, held_bytes, record_keys
from server.scheduler.operation import OperationState, PreparedAction, Stage
from server.scheduler.platform import RequirementSet
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseView
from server.scheduler.state.views import DedupKey


ESTIMATES = 4096  # held_bytes a session keeps by sketch (BotSession.held)
_ABSENT = object()


class StageEvent(NamedTuple):
    """One stage change, as watchers replay it."""

    stage: Stage
    stdout_name: str = ""
    stderr_name: str = ""


@dataclass(eq=False, slots=True)
class Execution:
    """One run of an action."""

    id: str
    action: PreparedAction
    priority: int
    seq: int  # arrival order, the tie-breaker within a priority
    queued_at: float
    dedup_key: DedupKey | None = None  # its entry in the state's in-flight table, if shared
    stage: Stage = Stage.QUEUED
    history: list[StageEvent] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)  # live handles; a list is 4x smaller than a set
    lease_id: str | None = None
    queue_entry: list | None = None  # the live heap entry while queued
    failed_workers: list[str] = field(default_factory=list)
    passes: int = 0  # times a bot took a later action over it (locality dispatch's fairness bound)
    waiting: int = 0  # locality's bounded wait for a better-placed bot: 0 never, 1 waiting, 2 over (see placement.py)
    awaited: BotSession | None = None  # the holder it waits for (Dispatch.wait_for_holder), while it does
    awaited_mark: int = 0  # that holder's ``given`` when the wait began
    response: re_pb2.ExecuteResponse | None = None
    partial_metadata: re_pb2.ExecutedActionMetadata | None = None
    stdout_name: str = ""
    stderr_name: str = ""
    finished_at: float | None = None
    signal: ChangeSignal = field(default_factory=ChangeSignal)

    @property
    def done(self) -> bool:
        return self.stage is Stage.COMPLETED

    def record(self, stage: Stage) -> None:
        """Enter ``stage`` and wake every watcher."""
        self.stage = stage
        self.history.append(StageEvent(stage, self.stdout_name, self.stderr_name))
        self.notify()

    def notify(self) -> None:
        self.signal.notify()

    def changed(self) -> asyncio.Future[None]:
        """A future resolved at the next change."""
        return self.signal.changed()


@dataclass(eq=False, slots=True)
class Operation:
    """One client's handle on an execution."""

    name: str
    execution: Execution
    seq: int
    first_event: int  # index into execution.history where this operation's view starts
    cancelled_response: re_pb2.ExecuteResponse | None = None
    finished_at: float | None = None
    owner: str = ""

    @property
    def done(self) -> bool:
        return self.cancelled_response is not None or self.execution.done


def state_of(operation: Operation, event: StageEvent | None = None) -> OperationState:
    """The view of ``operation`` at ``event`` (default: now)."""
    execution = operation.execution
    action = execution.action
    if operation.cancelled_response is not None:
        return OperationState(
            operation.name, action.instance_name, action.action_digest, Stage.COMPLETED, True,
            operation.cancelled_response, execution.stdout_name, execution.stderr_name, owner=operation.owner,
        )
    if event is None:
        event = StageEvent(execution.stage, execution.stdout_name, execution.stderr_name)
    done = event.stage is Stage.COMPLETED
    return OperationState(
        operation.name,
        action.instance_name,
        action.action_digest,
        event.stage,
        done,
        execution.response if done else None,
        event.stdout_name,
        event.stderr_name,
        execution.partial_metadata if event.stage is Stage.EXECUTING else None,
        owner=operation.owner,
    )


@dataclass(eq=False, slots=True)
class Lease:
    """One assignment of an execution to a session."""

    id: str
    execution_id: str
    session_name: str
    assigned_at: float
    stdout_write_name: str = ""
    stderr_write_name: str = ""


@dataclass(eq=False, slots=True)
class BotSession:
    name: str
    registration: BotRegistration
    expires_at: float
    healthy: bool = True
    lease_ids: dict[str, None] = field(default_factory=dict)  # an ordered set: answers list leases in order
    # Leases the server cancelled -> (what the bot is told, whether an answer has told it yet).
    cancelled: dict[str, tuple[LeaseView, bool]] = field(default_factory=dict)
    matching_keys: set[RequirementSet] = field(default_factory=set)
    calls_in_progress: int = 0
    waiter: asyncio.Future[None] | None = None
    sent_blobs: SentBlobs = field(default_factory=SentBlobs)  # inline blobs this bot has had
    # What its bot last said it holds and how busy it is (locality dispatch).
    cache: bytes | None = None
    cpu: float = 0.0
    memory: float = 0.0
    returned_at: float = float("-inf")  # when its last call claimed work and left a slot free
    expected: dict[int, None] = field(default_factory=dict)  # files of the actions given to it (locality.record_keys)
    given: int = 0  # actions given to it that did not wait for it: its progress, for those that do
    awaited_by: list[Execution] = field(default_factory=list)  # executions that wait for it (may be stale)
    # held_bytes by sketch, while its cache and the keys of ``expected`` stay the same (``held``)
    estimates: dict[bytes, int] = field(default_factory=dict)

    @property
    def bot_id(self) -> str:
        return self.registration.bot_id

    @property
    def free_capacity(self) -> int:
        return self.registration.capacity - len(self.lease_ids)

    def take_summary(self, summary: BotSummary | None) -> None:
        """Each field the bot sent replaces what it said before."""
        if summary is None:
            return
        if summary.cache is not None:
            self.cache = summary.cache or None
            self.estimates.clear()
        if summary.cpu is not None:
            self.cpu = summary.cpu
        if summary.memory is not None:
            self.memory = summary.memory

    def expect(self, sketch: bytes) -> None:
        """It was given an action: the files it fetches for it count as held, the newest ``EXPECTED``."""
        if self.cache is None:
            return  # it sends no summary: it holds nothing as far as dispatch knows
        expected = self.expected
        changed = False
        for key in record_keys(sketch):
            if expected.pop(key, _ABSENT) is _ABSENT:
                changed = True
            expected[key] = None
        while len(expected) > EXPECTED:
            del expected[next(iter(expected))]
            changed = True
        if changed:
            self.estimates.clear()  # a key came or went (a known key moving up changes no estimate)

    def held(self, sketch: bytes) -> int:
        """locality.held_bytes of a sketch for this bot, kept until its summary or the
        keys it expects change: a claim weighs each action of its window for up to 16
        other bots, and in a drain the next claim weighs mostly the same ones, for the
        same bots, holding the same (the drain's main cost before, docs/BENCHMARKS.md)."""
        estimates = self.estimates
        estimate = estimates.get(sketch)
        if estimate is None:
            if len(estimates) >= ESTIMATES:
                estimates.clear()
            estimate = estimates[sketch] = held_bytes(sketch, self.cache, self.expected)
        return estimate

    def load(self) -> tuple[float, float, float]:
        """Lower is less loaded: share of its slots in use, CPU, then memory pressure."""
        return len(self.lease_ids) / max(self.registration.capacity, 1), self.cpu, self.memory

    def wake(self) -> None:
        """End the held UpdateBotSession call, if there is one."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
