"""What crosses the seam between the policy and a state: ids and frozen snapshots.

A state never hands out its records, so the policy cannot change them behind the
state's back, and a state that lives elsewhere (Redis) can build the same values
from what it fetched. NamedTuples, because some are built on every bot call and a
frozen dataclass costs several times more to build.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import NamedTuple

from cas.digest import Digest
from server.scheduler.operation import PreparedAction
from server.scheduler.sessions import BotRegistration, LeaseReport

# Identical cacheable actions share an execution when their keys are equal; the
# policy decides the key (state never derives one), None means "never share".
DedupKey = tuple[str, Digest]


class Unserved(NamedTuple):
    """``add_operation`` refused a new execution: no connected worker can run it,
    and none could for longer than the grace period. ``since`` is when one last
    could (the state's start if never)."""

    since: float


class SessionView(NamedTuple):
    """A bot session at one moment."""

    name: str
    registration: BotRegistration
    healthy: bool
    lease_ids: tuple[str, ...]  # in assignment order
    untold_cancellations: bool  # leases cancelled that no answer has told the bot about yet
    holding: bool  # an UpdateBotSession call is waiting for work right now

    @property
    def bot_id(self) -> str:
        return self.registration.bot_id


class CompletedLease(NamedTuple):
    """A lease the bot reported finished, taken off its session and its execution.

    The execution waits, leased to nobody, until the policy finishes or retries it;
    a cancellation meanwhile wins (``SchedulerState.awaits_result`` turns false)."""

    lease_id: str
    execution_id: str
    action: PreparedAction
    queued_at: float
    bot_id: str
    assigned_at: float
    inline_limit: int  # the bot's agreed inline blob limit (0: it sends no inline outputs)
    report: LeaseReport


class OtherBot(NamedTuple):
    """``report`` refused: the session belongs to another bot; nothing was applied."""

    owner: str


class ReportOutcome(NamedTuple):
    listed: AbstractSet[str]  # leases the bot still holds (known to the state and not completed)
    completed: list[CompletedLease]


class RunningLease(NamedTuple):
    """A lease some bot runs past its deadline, for the policy to end."""

    lease_id: str
    execution_id: str
    action: PreparedAction
    bot_id: str
    assigned_at: float


class Lost(NamedTuple):
    """An execution whose worker lost it: queued again, or, past its retry budget
    (``requeued`` false), left leased to nobody and queued nowhere for the policy to fail."""

    execution_id: str
    action: PreparedAction
    failed_workers: tuple[str, ...]  # "bot-id (reason)", oldest first
    requeued: bool
