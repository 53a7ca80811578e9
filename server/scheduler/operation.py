"""Executions and operations: the scheduler's records, and the views it hands out.

An **Execution** is one run of one action (BuildGrid calls it a job). An
**Operation** is one client's handle on an execution: identical cacheable actions
share an execution, and each Execute call still gets its own operation name, so one
client cancelling or forgetting its operation does not disturb the others.

Records are mutable and owned by the scheduler; ``OperationState`` is the immutable
view the services turn into protos.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.change_signal import ChangeSignal
from server.scheduler.platform import RequirementSet

if TYPE_CHECKING:
    from server.scheduler.sessions import Lease


class Stage(enum.IntEnum):
    """REv2 ExecutionStage values."""

    UNKNOWN = re_pb2.ExecutionStage.UNKNOWN
    CACHE_CHECK = re_pb2.ExecutionStage.CACHE_CHECK
    QUEUED = re_pb2.ExecutionStage.QUEUED
    EXECUTING = re_pb2.ExecutionStage.EXECUTING
    COMPLETED = re_pb2.ExecutionStage.COMPLETED


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """An action that passed validation: everything the scheduler needs to run it."""

    instance_name: str
    action_digest: Digest
    action_bytes: bytes  # the serialized Action, sent to the worker as the lease payload
    requirements: RequirementSet
    do_not_cache: bool = False


class StageEvent(NamedTuple):
    """One stage change, as watchers replay it."""

    stage: Stage
    stdout_name: str = ""
    stderr_name: str = ""


@dataclass(eq=False, slots=True)
class Execution:
    """One run of an action; mutated only by the scheduler's synchronous methods.
    Slotted, like the other per-action records: 100,000 queued actions must stay cheap."""

    id: str
    action: PreparedAction
    priority: int
    seq: int  # arrival order, the tie-breaker within a priority
    queued_at: float
    retries_left: int
    stage: Stage = Stage.QUEUED
    history: list[StageEvent] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)  # live handles; a list is 4x smaller than a set
    lease: Lease | None = None
    queue_entry: list | None = None  # the live heap entry while queued
    failed_workers: list[str] = field(default_factory=list)
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

    @property
    def done(self) -> bool:
        return self.cancelled_response is not None or self.execution.done


@dataclass(frozen=True, slots=True)
class OperationState:
    """What a client sees of an operation at one moment."""

    name: str
    instance_name: str
    action_digest: Digest
    stage: Stage
    done: bool
    response: re_pb2.ExecuteResponse | None = None
    stdout_name: str = ""
    stderr_name: str = ""
    partial_metadata: re_pb2.ExecutedActionMetadata | None = None


def state_of(operation: Operation, event: StageEvent | None = None) -> OperationState:
    """The view of ``operation`` at ``event`` (default: now)."""
    execution = operation.execution
    action = execution.action
    if operation.cancelled_response is not None:
        return OperationState(
            operation.name, action.instance_name, action.action_digest, Stage.COMPLETED, True,
            operation.cancelled_response, execution.stdout_name, execution.stderr_name,
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
    )
