"""The [execution] section of the server config (docs/CONFIG.md, "Execution").

    [execution]
    enabled = true
    dispatch = "fifo"                # or "locality"
    max_action_timeout = "2h"
    max_retries = 3
    worker_grace = 60
    [execution.platform]
    container-image = "ignore"       # exact | all_of | minimum | ignore
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from cas.config import Above, AtLeast, Duration, Noun, Size, read_table
from server.scheduler.interface import SchedulerSettings
from server.scheduler.locality import FIFO, LOCALITY
from server.scheduler.platform import MatchPolicy, PlatformMatcher
from server.scheduler.state.interface import StateFactory

_SCHEDULER = SchedulerSettings()  # the scheduler's own defaults


class DispatchMode(enum.Enum):
    LOCALITY = "locality"  # the bot holding most of the action's inputs, then the least loaded
    FIFO = "fifo"  # the bot waiting longest; the oldest queued action

Policy = Annotated[MatchPolicy, Noun("matching policy")]


class StateKind(enum.Enum):
    """Where the scheduler keeps its state."""

    MEMORY = "memory"
    REDIS = "redis"


@dataclass(frozen=True)
class ExecutionConfig:
    """``[execution]``: remote execution, one scheduler for every instance."""

    enabled: bool = True
    """Serve Execution, Operations, Bots and LogStream."""
    dispatch: DispatchMode = DispatchMode.FIFO
    """Which bot gets which action: "fifo" (the bot waiting longest) or "locality" (where its inputs are, then the least loaded)."""
    locality_wait: Duration = 0.0
    """With locality: how long an action may wait for a busy bot that holds much more of it; 0 never waits."""
    locality_wait_for_holder: bool = True
    """With locality and no locality_wait: an action waits for the busy bot holding much more of it until that bot moves on to other work."""
    locality_holder_wait_max: Duration = 10.0
    """The longest that wait for the holder lasts (a holder running a long action)."""
    locality_holder_backlog: Annotated[int, Above(0)] = 12
    """Actions that may wait for one holder at once, per slot of it; beyond, the next is taken by an idle bot."""
    locality_holder_wait_bytes: Size = 256 << 10
    """Input bytes of an action worth one slot's worth of its holder's progress in that wait (a bigger one waits longer)."""
    max_action_timeout: Duration = 7200.0
    """Actions asking for a longer timeout are refused."""
    min_priority: int = -1000
    """The lowest ExecutionPolicy.priority advertised (lower runs first)."""
    max_priority: int = 1000
    """The highest priority advertised; priorities outside are clamped."""
    max_retries: Annotated[int, AtLeast(0)] = _SCHEDULER.max_retries
    """How often an action is requeued after its worker is lost."""
    worker_grace: Duration = _SCHEDULER.worker_grace
    """How long an action no connected worker can run waits for one."""
    bot_session_timeout: Duration = _SCHEDULER.bot_session_timeout
    """A bot silent this long after its last call is dead; its leases are requeued."""
    bot_long_poll_timeout: Duration = _SCHEDULER.bot_long_poll_timeout
    """The longest an UpdateBotSession call is held waiting for work."""
    timeout_grace: Duration = _SCHEDULER.timeout_grace
    """How long past its action's timeout (max_action_timeout for one without) a lease
    may run before the server ends it DEADLINE_EXCEEDED and tells its bot to stop."""
    progress_interval: Duration = _SCHEDULER.progress_interval
    """Execute and WaitExecution repeat the state at least this often (at most 30 s)."""
    operation_retention: Duration = _SCHEDULER.operation_retention
    """Finished operations stay reachable this long."""
    logstream_max_bytes: Size = 16 << 20
    """Each live log stream keeps at most this many of its newest bytes."""
    logstream_retention: Duration = 600.0
    """Log streams are dropped this long after they finish."""
    tick_interval: Annotated[Duration, Above(0)] = 1.0
    """How often session expiry, retention and grace periods are checked."""
    default_matching: Policy = MatchPolicy.EXACT
    """The matching policy of platform properties not named in [execution.platform]."""
    input_cache_size: Size = 64 << 20
    """Bytes of validated Commands and Directories remembered; 0 turns it off."""
    inline_blob_limit: Size = 1 << 20
    """The most inline blob bytes a worker gets per Bots answer and report; 0 refuses."""
    state: Annotated[StateKind, Noun("scheduler state")] = StateKind.MEMORY
    """``memory`` (this process) or ``redis`` (shared by server replicas)."""
    redis_url: str = ""
    """With state = "redis": the Redis server (cas/redis/connection.py URLs)."""
    redis_key_prefix: str = "reapi:scheduler:"
    """With state = "redis": the prefix of every key, so schedulers can share a Redis."""
    redis_timeout: Annotated[Duration, Above(0)] = 2.0
    """With state = "redis": the longest one Redis call waits before UNAVAILABLE."""
    platform: Mapping[str, Policy] = field(default_factory=dict)
    """``[execution.platform]``: property name -> matching policy."""

    def __post_init__(self) -> None:
        if self.progress_interval <= 0 or self.progress_interval > 30:
            raise ValueError("progress_interval must be above 0 and at most 30 (clients time out at 60s)")
        if self.min_priority > self.max_priority:
            raise ValueError("min_priority is above max_priority")
        if self.state is StateKind.REDIS and not self.redis_url:
            raise ValueError('state = "redis" needs redis_url (e.g. "redis://127.0.0.1:6379/0")')
        if self.state is StateKind.REDIS and self.locality and self.locality_wait > 0:
            raise ValueError('locality_wait is not supported with state = "redis" (the bounded wait is the memory '
                             'state\'s only): set locality_wait = 0 there, or use state = "memory"')

    def state_factory(self) -> StateFactory:
        """What builds the scheduler's state (the Redis state's modules load only when used)."""
        if self.state is StateKind.REDIS:
            from server.scheduler.state.redis.factory import redis_state

            return redis_state(self.redis_url, self.redis_key_prefix, self.redis_timeout)
        from server.scheduler.state.memory.state import memory_state

        return memory_state

    @property
    def settings(self) -> SchedulerSettings:
        return SchedulerSettings(
            max_retries=self.max_retries,
            operation_retention=self.operation_retention,
            bot_session_timeout=self.bot_session_timeout,
            bot_long_poll_timeout=self.bot_long_poll_timeout,
            worker_grace=self.worker_grace,
            progress_interval=self.progress_interval,
            max_action_timeout=self.max_action_timeout,
            timeout_grace=self.timeout_grace,
            dispatch=(replace(LOCALITY, wait=self.locality_wait, wait_for_holder=self.locality_wait_for_holder,
                               holder_wait_max=self.locality_holder_wait_max, holder_backlog=self.locality_holder_backlog,
                               holder_wait_bytes=self.locality_holder_wait_bytes)
                      if self.locality else FIFO),
        )

    @property
    def locality(self) -> bool:
        return self.dispatch is DispatchMode.LOCALITY

    @property
    def policies(self) -> Mapping[str, MatchPolicy]:
        return self.platform

    @property
    def default_policy(self) -> MatchPolicy:
        return self.default_matching

    def matcher(self) -> PlatformMatcher:
        return PlatformMatcher(self.policies, self.default_policy)


def parse_execution_config(section: Mapping[str, Any]) -> ExecutionConfig:
    return read_table(ExecutionConfig, section, "[execution]")
