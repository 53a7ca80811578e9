"""What the scheduler is given and what it shows of operations.

An **execution** is one run of one action (BuildGrid calls it a job). An
**operation** is one client's handle on an execution: identical cacheable actions
share an execution, and each Execute call still gets its own operation name, so one
client cancelling or forgetting its operation does not disturb the others.

``PreparedAction`` is what validation hands the scheduler; ``OperationState`` the
immutable view the services turn into protos. The records behind them belong to
the scheduler's state (state/memory/records.py for the in-memory one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.platform import RequirementSet


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
    timeout: float | None = None  # the Action's timeout in seconds (None: it sets none)
    sketch: bytes = b""  # its input sketch, for locality dispatch (locality.py); b"" = none


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
    owner: str = ""  # the principal whose Execute made it; "" without authentication (server/auth)
