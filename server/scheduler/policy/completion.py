"""What a lease the bot reported finished turns into, and the retry budget.

A worker failure (results.py) sends the execution back to the queue, up to
``max_retries`` times; past that it fails with UNAVAILABLE, naming every worker that
lost it. The ExecutionObserver (observer.py) hears of each loss and each result. Anything else is the action's outcome: outputs the bot sent inline go to
the CAS first (only for bots that agreed on inline blobs: others' inline fields
reach the client as sent), clean successes go to the action cache, then the
execution completes. The execution waits, leased to nobody, while this awaits the
stores: a cancellation in that window wins and the late result is dropped.
"""

from __future__ import annotations

import logging

from google.rpc import code_pb2, status_pb2

from cas.errors import ReapiError
from server.scheduler.clock import Clock
from server.scheduler.inline_outputs import take_inline_outputs
from server.scheduler.interface import ResultCache, SchedulerSettings
from server.scheduler.observer import ExecutionObserver
from server.scheduler.results import build_response, is_cacheable, is_worker_failure, status_response
from server.scheduler.state.interface import SchedulerState
from server.scheduler.state.views import CompletedLease, Lost

log = logging.getLogger("reapi.scheduler")


class Completion:
    def __init__(
        self,
        state: SchedulerState,
        settings: SchedulerSettings,
        results: ResultCache | None,
        clock: Clock,
        observer: ExecutionObserver | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.results = results
        self.clock = clock
        self.observer = observer

    async def complete_all(self, completed: list[CompletedLease]) -> None:
        for done in completed:
            await self.complete(done)

    async def complete(self, done: CompletedLease) -> None:
        if not await self.state.awaits_result(done.execution_id):
            return  # cancelled meanwhile
        report = done.report
        status = report.status or status_pb2.Status()
        if is_worker_failure(status):
            await self.retry(done.execution_id, done.bot_id,
                             f"it reported {code_pb2.Code.Name(status.code)}: {status.message}")
            return
        response = build_response(report, done.bot_id, done.assigned_at, done.queued_at, self.clock.now())
        action = done.action
        if self.observer is not None:
            self.observer.finished(action, response)
        if self.results is not None and done.inline_limit > 0:
            try:
                blobs = take_inline_outputs(response.result, action.action_digest.function)
                if blobs:
                    await self.results.store_blobs(action.instance_name, blobs)
            except ReapiError as err:
                await self.retry(done.execution_id, done.bot_id, f"its inline outputs could not be stored: {err.message}")
                return
        if self.results is not None and not action.do_not_cache and is_cacheable(response):
            try:
                await self.results.store(action.instance_name, action.action_digest, response.result)
            except Exception as err:  # noqa: BLE001 - the client still gets its result, told why
                if not isinstance(err, ReapiError):
                    log.exception("storing the result of %s failed", action.action_digest)
                log.warning("result of %s not cached: %s", action.action_digest, err)
                response.message = f"{response.message}; the result was not cached: {err}".lstrip("; ")
        await self.state.finish_execution(done.execution_id, response, self.clock.now())

    async def retry(self, execution_id: str, bot_id: str, reason: str) -> None:
        """The worker lost the execution: queue it again, budget permitting."""
        lost = await self.state.retry_execution(
            execution_id, self.failure_note(bot_id, reason), self.settings.max_retries, self.clock.now()
        )
        if lost is not None:
            await self.handle_lost([lost], bot_id, reason)

    async def handle_lost(self, lost: list[Lost], bot_id: str, reason: str) -> None:
        """Tell the observer; fail executions past their retry budget, naming every
        worker that lost them (the state requeued the others)."""
        for execution in lost:
            if self.observer is not None:
                self.observer.retried(execution.action, f"{bot_id} lost it: {reason}")
            if execution.requeued:
                continue
            tried = "; ".join(execution.failed_workers)
            await self.state.finish_execution(execution.execution_id, status_response(
                code_pb2.UNAVAILABLE,
                f"action {execution.action.action_digest} was lost by {len(execution.failed_workers)} workers, "
                f"more than its retry budget of {self.settings.max_retries} allows: {tried}",
            ), self.clock.now())

    @staticmethod
    def failure_note(bot_id: str, reason: str) -> str:
        """How a lost execution remembers a worker that failed it."""
        return f"{bot_id} ({reason})"
