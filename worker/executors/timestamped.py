"""TimestampedExecutor: stamps when the worker took and finished the action, and who it was.

The local executor stamps its own phases (fetch, run, upload); this outer layer adds
``worker_start`` / ``worker_completed`` and the worker's name, so the timestamps
cover queueing inside the worker too. The clock is injected for exact tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.executors import Executor, Task
from worker.executors.local import stamp


class TimestampedExecutor:
    def __init__(self, inner: Executor, worker_name: str, clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.worker_name = worker_name
        self.clock = clock

    async def execute(self, task: Task) -> re_pb2.ExecuteResponse:
        started = self.clock()
        response = await self.inner.execute(task)
        meta = response.result.execution_metadata
        meta.worker = self.worker_name
        stamp(meta.worker_start_timestamp, started)
        stamp(meta.worker_completed_timestamp, self.clock())
        return response
