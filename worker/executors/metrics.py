"""MetricsExecutor: counts actions by outcome and sums their time, for logs and benchmarks.

Plain in-process counters: the worker logs a summary at exit, and tests and
benchmarks read them directly. With ``--http-listen`` each finished action is also
handed to ``observe`` (worker/metrics.py feeds Prometheus from it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.executors import Executor, Task

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass
class ExecutionMetrics:
    outcomes: Counter[str] = field(default_factory=Counter)  # "OK", "exit 1", "DEADLINE_EXCEEDED", ...
    running: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        parts = ", ".join(f"{name}: {count}" for name, count in sorted(self.outcomes.items()))
        return f"{self.total} actions in {self.seconds:.1f} s ({parts or 'none'})"


def outcome(response: re_pb2.ExecuteResponse) -> str:
    if response.status.code:
        return _CODE_NAMES.get(response.status.code, str(response.status.code))
    return "OK" if response.result.exit_code == 0 else f"exit {response.result.exit_code}"


class MetricsExecutor:
    def __init__(self, inner: Executor, metrics: ExecutionMetrics, clock: Callable[[], float] = time.monotonic,
                 observe: Callable[[re_pb2.ExecuteResponse], None] | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self.clock = clock
        self.observe = observe

    async def execute(self, task: Task) -> re_pb2.ExecuteResponse:
        started = self.clock()
        self.metrics.running += 1
        try:
            response = await self.inner.execute(task)
        except BaseException:
            self.metrics.outcomes["CANCELLED"] += 1
            raise
        finally:
            self.metrics.running -= 1
            self.metrics.seconds += self.clock() - started
        self.metrics.outcomes[outcome(response)] += 1
        if self.observe is not None:
            self.observe(response)
        return response
