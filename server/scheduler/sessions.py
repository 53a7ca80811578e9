"""Bot sessions and leases as the Bots service and the scheduler exchange them.

A session is one bot process in contact with the server. It holds the leases
assigned to it until they complete, are cancelled or are requeued; every answer to
the bot lists them all, so an answer lost in transit loses nothing (see
docs/BOTS_PROTOCOL.md section 2). The records behind them belong to the scheduler's
state (state/memory/records.py for the in-memory one).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.rpc import status_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.input_cache import SentBlobs
from server.scheduler.platform import WorkerOffer


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
    owner: str = ""  # the principal that opened the session; "" without authentication (server/auth)


@dataclass(frozen=True)
class BotSummary:
    """What a bot says it holds and how busy it is (docs/BOTS_PROTOCOL.md section 8), for
    locality dispatch (locality.py). Each field replaces the bot's last word on it; None
    leaves that as it was (a bot sends its cache summary only when it changed)."""

    cache: bytes | None = None  # a DigestFilter's wire form (cas/digest_filter.py), checked
    cpu: float | None = None  # recent CPU pressure, 0 (idle) to 1 (saturated)
    memory: float | None = None  # recent memory pressure, 0 to 1


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
