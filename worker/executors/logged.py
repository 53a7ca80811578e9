"""LoggedExecutor: one log line per action, and INTERNAL for anything unexpected.

The outermost layer. An exception escaping the chain is a worker bug, not the
action's failure: it is logged with its traceback and reported as INTERNAL, which
the server answers by retrying the action elsewhere.
"""

from __future__ import annotations

import asyncio
import logging

from cas.errors import Internal
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.executors import Executor, Task
from worker.executors.metrics import outcome

log = logging.getLogger("reapi.worker")


class LoggedExecutor:
    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    async def execute(self, task: Task) -> re_pb2.ExecuteResponse:
        try:
            response = await self.inner.execute(task)
        except asyncio.CancelledError:
            log.info("action %s (lease %s) cancelled", task.label, task.lease_id)
            raise
        except Exception as exc:  # noqa: BLE001 - reported as INTERNAL, never swallowed
            log.exception("action %s (lease %s): worker error", task.label, task.lease_id)
            response = re_pb2.ExecuteResponse()
            response.status.CopyFrom(Internal(f"worker error: {type(exc).__name__}: {exc}").to_status())
            return response
        meta = response.result.execution_metadata
        ran = meta.execution_completed_timestamp.ToNanoseconds() - meta.execution_start_timestamp.ToNanoseconds()
        status = f" status: {response.status.message}" if response.status.code else ""
        log.info("action %s: %s (ran %.1f ms)%s", task.label, outcome(response), max(ran, 0) / 1e6, status)
        return response
