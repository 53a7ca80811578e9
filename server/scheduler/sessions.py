"""Bot sessions and leases: the worker side of the scheduler's records.

A session is one bot process in contact with the server. It holds the leases
assigned to it until they complete, are cancelled or are requeued; every answer to
the bot lists them all, so an answer lost in transit loses nothing (see
docs/BOTS_PROTOCOL.md section 2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.rpc import status_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.input_cache import SentBlobs
from server.scheduler.platform import RequirementSet, WorkerOffer

if TYPE_CHECKING:
    from server.scheduler.operation import Execution


@dataclass(eq=False, slots=True)
class Lease:
    """One assignment of an execution to a session."""

    id: str
    execution: Execution
    session: BotSession
    assigned_at: float
    stdout_write_name: str = ""
    stderr_write_name: str = ""


@dataclass(frozen=True)
class BotRegistration:
    """What CreateBotSession tells the scheduler about a bot."""

    bot_id: str
    instance_name: str  # the session's parent
    offer: WorkerOffer
    capacity: int = 1
    healthy: bool = True
    hold_when_busy: bool = False
    # Bytes of blobs its leases and reports may carry inline (docs/BOTS_PROTOCOL.md
    # section 7): what the bot asked for, capped by the server; 0 = none.
    inline_limit: int = 0


@dataclass(frozen=True)
class LeaseReport:
    """One lease as the bot lists it in UpdateBotSession."""

    lease_id: str
    completed: bool
    status: status_pb2.Status | None = None  # for completed leases
    response: re_pb2.ExecuteResponse | None = None  # for completed leases


@dataclass(frozen=True)
class LeaseView:
    """One lease as the server sends it to the bot."""

    lease_id: str
    cancelled: bool
    instance_name: str
    action_digest_proto: re_pb2.Digest
    digest_function: int
    action_bytes: bytes
    stdout_write_name: str
    stderr_write_name: str


@dataclass(frozen=True)
class SessionAnswer:
    name: str
    leases: list[LeaseView]
    expire_time: float
    inline_limit: int = 0  # the session's BotRegistration.inline_limit
    sent_blobs: SentBlobs | None = None  # what the session's bot was sent inline so far


@dataclass(eq=False, slots=True)
class BotSession:
    name: str
    registration: BotRegistration
    expires_at: float
    healthy: bool = True
    leases: dict[str, Lease] = field(default_factory=dict)
    # Leases the server cancelled -> (lease, whether an answer has told the bot yet).
    cancelled: dict[str, tuple[Lease, bool]] = field(default_factory=dict)
    matching_keys: set[RequirementSet] = field(default_factory=set)
    calls_in_progress: int = 0
    waiter: asyncio.Future[None] | None = None
    closed: bool = False
    sent_blobs: SentBlobs = field(default_factory=SentBlobs)  # inline blobs this bot has had

    @property
    def bot_id(self) -> str:
        return self.registration.bot_id

    @property
    def free_capacity(self) -> int:
        return self.registration.capacity - len(self.leases)

    def wake(self) -> None:
        """End the held UpdateBotSession call, if there is one."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
