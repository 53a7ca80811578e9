"""Remote execution's running parts, built from [execution]: the scheduler (its policy
over the configured state), live log streams, the result and input caches, and the
housekeeping ticker. server/app.py wires them to the gRPC services; the console reads them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cas.digest import ALGORITHMS
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.config import ServerConfig
from server.execution_log import ExecutionLog
from server.explain.history import ActionHistory
from server.instances import InstanceRegistry
from server.logstreams import LogStreams, LogStreamStore
from server.metrics.families import ServerMetrics
from server.scheduler.clock import Clock, SystemClock
from server.scheduler.config import ExecutionConfig, parse_execution_config
from server.scheduler.input_cache import InputCache
from server.scheduler.policy.scheduler import SchedulingPolicy
from server.scheduler.result_cache import InstanceResultCache
from server.scheduler.state.interface import StateFactory

log = logging.getLogger("reapi.server")


@dataclass
class ExecutionParts:
    """Remote execution: the scheduler, live log streams, and the housekeeping ticker."""

    config: ExecutionConfig
    scheduler: SchedulingPolicy
    logstreams: LogStreams
    results: InstanceResultCache
    inputs: InputCache  # checked Commands and Directories: validation and inline lease blobs share it
    ticker: asyncio.Task[None] | None = None
    history: ActionHistory | None = None  # what each execution produced, for "why did this miss?"

    def capabilities(self) -> re_pb2.ExecutionCapabilities:
        return re_pb2.ExecutionCapabilities(
            exec_enabled=True,
            digest_function=re_pb2.DigestFunction.SHA256,
            digest_functions=sorted(ALGORITHMS),  # type: ignore[arg-type]
            execution_priority_capabilities=re_pb2.PriorityCapabilities(priorities=[
                re_pb2.PriorityCapabilities.PriorityRange(
                    min_priority=self.config.min_priority, max_priority=self.config.max_priority
                )
            ]),
        )

    def start(self) -> None:
        self.ticker = asyncio.create_task(self._tick_forever(), name="reapi-execution-ticker")

    async def _tick_forever(self) -> None:
        """Session expiry, retention and grace periods: time-driven, never dispatch."""
        while True:
            await asyncio.sleep(self.config.tick_interval)
            try:
                await self.scheduler.tick()
                self.logstreams.tick()
            except Exception:  # noqa: BLE001 - housekeeping must outlive one bad tick
                log.exception("execution housekeeping failed; trying again next tick")

    async def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            await asyncio.gather(self.ticker, return_exceptions=True)
        await self.scheduler.aclose()
        close_streams = getattr(self.logstreams, "aclose", None)
        if close_streams is not None:
            await close_streams()


def build_execution(
    config: ServerConfig, instances: InstanceRegistry, clock: Clock | None = None,
    metrics: ServerMetrics | None = None,
    scheduler_state: StateFactory | None = None,
) -> ExecutionParts | None:
    """The scheduler and its collaborators, or None when [execution] enabled = false."""
    execution = parse_execution_config(config.section("execution"))
    if not execution.enabled:
        return None
    clock = clock or SystemClock()
    scheduler_state = scheduler_state or execution.state_factory()
    results = InstanceResultCache(instances)
    matcher = execution.matcher()
    shared_streams = getattr(scheduler_state, "log_streams", None)
    logstreams: LogStreams
    if shared_streams is not None:  # a shared state keeps the log streams beside it (Redis)
        logstreams = shared_streams(clock, execution.logstream_max_bytes, execution.logstream_retention)
        state = scheduler_state(matcher, execution.settings, None, clock)
    else:
        local = LogStreamStore(
            max_bytes=execution.logstream_max_bytes, retention=execution.logstream_retention, clock=clock
        )
        logstreams = local
        state = scheduler_state(matcher, execution.settings, local, clock)
    scheduler = SchedulingPolicy(
        state, matcher, execution.settings, results=results, clock=clock, observer=ExecutionLog(metrics)
    )
    return ExecutionParts(execution, scheduler, logstreams, results, InputCache(execution.input_cache_size))
