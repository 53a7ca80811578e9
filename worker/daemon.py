"""The Bots session loop: take leases, run them through the executor, report results.

It speaks docs/BOTS_PROTOCOL.md with the ``reapi-hold-when-busy`` extension: an
UpdateBotSession call is kept outstanding, held by the server until there is
something new (a lease, a cancellation). When a lease finishes, that call is
cancelled and a new one carries the completion at once, so results never wait
for a poll interval. With every slot busy, the held call (which could then only
bring a cancellation) is opened ``busy_call_delay`` after the last exchange: a
short action is reported before that, saving a call per action. Every call lists
every lease the worker holds; a completed lease is listed until an answer leaves it
out (the server's acknowledgement).

Robustness:
- transport errors: retry with capped, jittered exponential backoff; running
  actions and the local cache are kept (a brief outage costs nothing);
- NOT_FOUND (the session expired, or the server restarted): the server has
  requeued our leases, so they are stopped and a new session is created;
- ``stop`` (SIGTERM): report BOT_TERMINATING (no new leases), let running actions
  finish for up to ``drain_timeout``, hand the rest back as UNAVAILABLE (the
  server retries them elsewhere), wait for the acknowledgement, then say goodbye
  (BOT_TERMINATING with no leases: the server closes the session at once), return.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from cas.bots_protocol_names import (CAPACITY_CONFIG, FILES_FORM_KEY, FILES_RUN, HOLD_WHEN_BUSY_CONFIG, INLINE_BLOBS_KEY,
                                     INLINE_FILES_KEY, LOAD_KEY, SUMMARY_CONFIG, SUMMARY_KEY)
from cas.collector import Burst
from cas.errors import ReapiError, Unavailable
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import worker_pb2
from worker.cache_summary import CacheSummary, load_text
from worker.executors import Executor
from worker.leases import HeldLease, inline_limit_of, lease_context, summary_limit_of, task_for
from worker.platform import PlatformProperties

log = logging.getLogger("reapi.worker")

# Calls with this little time left are answered at once, never held (docs/BOTS_PROTOCOL.md).
QUICK_CALL_TIMEOUT = 0.9
DRAIN_HEARTBEAT = 5.0
# After handing leases back, how long reporting them may still be attempted.
REPORT_GRACE = 5.0


@dataclass(frozen=True)
class SessionSettings:
    instance_name: str = ""
    bot_id: str = "reapi-worker"
    capacity: int = 1
    call_timeout: float = 60.0  # deadline of each UpdateBotSession (the server holds up to 80% of it)
    drain_timeout: float = 60.0  # on stop: how long running actions may finish before being handed back
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    inline_blob_limit: int = 0  # bytes of inline blobs to ask for (docs/BOTS_PROTOCOL.md section 7)
    inline_file_limit: int = 0  # of them, bytes of small input files (section 7, "Input files")
    # With every slot busy, how long to wait before holding a call open just for
    # cancellations: an action that finishes sooner is reported without one.
    busy_call_delay: float = 0.5
    cache_summary_size: int = 0  # bytes of cache summary to offer (docs/BOTS_PROTOCOL.md section 8)


class Backoff:
    """Capped exponential delays with full jitter; ``reset`` after a success."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self.rng = initial, maximum, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.attempt = 0


def worker_proto(properties: PlatformProperties, capacity: int, inline_blob_limit: int = 0,
                 cache_summary_size: int = 0, inline_file_limit: int = 0) -> worker_pb2.Worker:
    worker = worker_pb2.Worker()
    for key, value in properties.pairs():
        worker.properties.add(key=key, value=value)
    worker.configs.add(key=CAPACITY_CONFIG, value=str(capacity))
    worker.configs.add(key=HOLD_WHEN_BUSY_CONFIG, value="true")
    if inline_blob_limit > 0:
        worker.configs.add(key=INLINE_BLOBS_KEY, value=str(inline_blob_limit))
        if inline_file_limit > 0:
            worker.configs.add(key=INLINE_FILES_KEY, value=str(min(inline_file_limit, inline_blob_limit)))
            worker.configs.add(key=FILES_FORM_KEY, value=FILES_RUN)
    if cache_summary_size > 0:
        worker.configs.add(key=SUMMARY_CONFIG, value=str(cache_summary_size))
    return worker


class BotDaemon:
    """One Bots session against one server; ``run`` until ``stop`` is set."""

    def __init__(self, bots: bots_pb2_grpc.BotsStub, executor: Executor, properties: PlatformProperties,
                 settings: SessionSettings, backoff: Backoff | None = None,
                 summary: CacheSummary | None = None) -> None:
        self.bots = bots
        self.executor = executor
        self.settings = settings
        self.summary = summary if settings.cache_summary_size > 0 else None
        self.worker = worker_proto(properties, settings.capacity, settings.inline_blob_limit,
                                   settings.cache_summary_size if self.summary is not None else 0,
                                   settings.inline_file_limit)
        self.summary_limit = 0  # the cache summary bytes the server agreed to take (0: send none)
        self._summary_sent = -1  # the summary version the server last answered a call with
        self.backoff = backoff or Backoff(settings.backoff_initial, settings.backoff_max)
        self.session_name = ""
        self.inline_limit = 0  # what the server agreed to (0 until it says so)
        self.leases: dict[str, HeldLease] = {}
        self._changed = asyncio.Event()  # a lease finished: report now
        self._draining = False
        self.connected = asyncio.Event()  # set while the server answers (tests, readiness)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        hand_back_at: float | None = None  # running leases are handed back then
        give_up_at = 0.0  # and reporting stops being attempted then
        while True:
            if stop.is_set() and not self._draining:
                self._draining = True
                hand_back_at = loop.time() + self.settings.drain_timeout
                give_up_at = hand_back_at + REPORT_GRACE
                log.info("stopping: finishing %d running actions (up to %.0f s)", self._running(), self.settings.drain_timeout)
            if self._draining:
                if hand_back_at is not None and loop.time() >= hand_back_at:
                    self._hand_back_running()
                    hand_back_at = None
                if not self.leases or not self.session_name:
                    break
                if not self._running():  # only reports left: they get REPORT_GRACE from now
                    give_up_at = min(give_up_at, loop.time() + REPORT_GRACE)
                if loop.time() >= give_up_at:
                    log.warning("stopping without confirmation for %d leases (the server requeues any it did not get)", len(self.leases))
                    break
                await self._pace_drain(hand_back_at)
            try:
                if not self.session_name:
                    await self._create_session()
                await self._exchange(stop)
                if self.backoff.attempt:
                    log.info("server reachable again")
                self.backoff.reset()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    continue
                await self._on_rpc_error(exc, stop)
        if self._draining:
            await self._say_goodbye()
        await self._stop_all("worker stopped")

    async def _say_goodbye(self) -> None:
        """Tell the server this bot is gone (BOT_TERMINATING, holding nothing), so it
        closes the session and requeues anything it still counts as ours at once,
        instead of when the session expires."""
        if not self.session_name:
            return
        session = bots_pb2.BotSession(name=self.session_name, bot_id=self.settings.bot_id,
                                      status=bots_pb2.BotStatus.BOT_TERMINATING, worker=self.worker)
        try:
            await self.bots.UpdateBotSession(
                bots_pb2.UpdateBotSessionRequest(name=self.session_name, bot_session=session),
                timeout=QUICK_CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("the server did not hear the goodbye (%s); the session expires by itself", exc.code().name)
            return
        log.info("told the server: bot session %s ends", self.session_name)
        self.session_name = ""

    async def _pace_drain(self, hand_back_at: float | None) -> None:
        """While stopping, calls are not held: wait for news (or a heartbeat) between them."""
        if self._changed.is_set() or any(held.completed for held in self.leases.values()):
            return
        wait = DRAIN_HEARTBEAT
        if hand_back_at is not None:
            wait = min(wait, max(0.0, hand_back_at - asyncio.get_running_loop().time()))
        try:
            await asyncio.wait_for(self._changed.wait(), wait)
        except TimeoutError:
            pass

    async def _create_session(self) -> None:
        session = bots_pb2.BotSession(bot_id=self.settings.bot_id, status=self._status(), worker=self.worker)
        self._summary_sent = -1  # a new session knows nothing of us
        metadata, version = self._call_metadata()
        call = self.bots.CreateBotSession(
            bots_pb2.CreateBotSessionRequest(parent=self.settings.instance_name, bot_session=session),
            timeout=self.settings.call_timeout, metadata=metadata,
        )
        answer = await call
        self._summary_sent = version
        self.session_name = answer.name
        log.info("bot session %s created (bot id %s)", answer.name, self.settings.bot_id)
        self.connected.set()
        self._apply(answer, await call.trailing_metadata())

    async def _exchange(self, stop: asyncio.Event) -> None:
        """One UpdateBotSession.

        A call carrying completions (or made while stopping) gets a deadline under
        1 s, so the server answers it at once instead of holding it, and it is never
        cancelled: a report is never cut off while the server records it. Any other
        call is held by the server and cancelled here as soon as there is something
        to report, or a stop to announce.
        """
        quick = self._draining or any(held.completed for held in self.leases.values())
        if not quick and self._running() >= self.settings.capacity and self.settings.busy_call_delay > 0:
            # No slot free, so a held call could only bring a cancellation; most actions
            # finish sooner than that is worth a call, and their report goes out at once.
            if await self._wait_for_news(stop, self.settings.busy_call_delay):
                return
        self._changed.clear()
        session = bots_pb2.BotSession(name=self.session_name, bot_id=self.settings.bot_id,
                                      status=self._status(), worker=self.worker,
                                      leases=[held.to_proto() for held in self.leases.values()])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("UpdateBotSession (%s): %s", "quick" if quick else "held",
                      ", ".join(f"{h.lease_id}={'COMPLETED' if h.completed else 'ACTIVE'}" for h in self.leases.values()) or "no leases")
        metadata, version = self._call_metadata()
        call = self.bots.UpdateBotSession(
            bots_pb2.UpdateBotSessionRequest(name=self.session_name, bot_session=session),
            timeout=QUICK_CALL_TIMEOUT if quick else self.settings.call_timeout, metadata=metadata,
        )
        if quick:
            answer, trailing = await self._answer(call)
        else:
            waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop.wait())]
            answer_task = asyncio.ensure_future(self._answer(call))
            try:
                done, _ = await asyncio.wait([answer_task, *waiters], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if answer_task not in done:
                call.cancel()  # something to report: a fresh call carries it
                answer_task.cancel()
                try:
                    await answer_task
                except (asyncio.CancelledError, grpc.aio.AioRpcError):
                    pass
                return
            answer, trailing = answer_task.result()
        self._summary_sent = version
        self.connected.set()
        self._apply(answer, trailing)

    async def _wait_for_news(self, stop: asyncio.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` for a lease to finish or a stop; whether either came."""
        self._changed.clear()
        waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return bool(done)

    def _call_metadata(self) -> tuple[tuple[tuple[str, str | bytes], ...], int]:
        """What goes with a call (docs/BOTS_PROTOCOL.md section 8), once the server agreed:
        the load every time, the cache summary when it changed since the last answered
        call; and the summary version that answer will confirm."""
        if self.summary is None or self.summary_limit <= 0:
            return (), self._summary_sent
        entries: list[tuple[str, str | bytes]] = [(LOAD_KEY, load_text())]
        version = self.summary.version
        if version != self._summary_sent:
            wire = self.summary.wire()
            if len(wire) <= self.summary_limit:
                entries.append((SUMMARY_KEY, wire))
        return tuple(entries), version

    @staticmethod
    async def _answer(call: grpc.aio.UnaryUnaryCall) -> tuple[bots_pb2.BotSession, object]:
        answer = await call
        return answer, await call.trailing_metadata()

    async def _on_rpc_error(self, exc: grpc.aio.AioRpcError, stop: asyncio.Event) -> None:
        self.connected.clear()
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND and self.session_name:
            log.warning("bot session %s is gone (%s); its leases were requeued", self.session_name, exc.details())
            await self._stop_all("session lost")
            self.session_name = ""
            self.backoff.reset()
            return  # a new session at once
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED):
            log.error("the server refused the bot session: %s: %s", code.name, exc.details())
        elif self.backoff.attempt == 0:
            log.warning("server unreachable (%s: %s); retrying with backoff", code.name, exc.details())
        else:
            log.debug("still unreachable (%s: %s)", code.name, exc.details())
        delay = self.backoff.next_delay()
        if self._draining:
            await asyncio.sleep(min(delay, 0.5))
            return
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass

    # -- leases ------------------------------------------------------------------------------

    def _status(self) -> bots_pb2.BotStatus:
        return bots_pb2.BotStatus.BOT_TERMINATING if self._draining else bots_pb2.BotStatus.OK

    def _running(self) -> int:
        return sum(1 for held in self.leases.values() if not held.completed)

    def _apply(self, answer: bots_pb2.BotSession, trailing: object) -> None:
        """Start new leases, stop cancelled or vanished ones, forget acknowledged completions."""
        self.inline_limit = inline_limit_of(trailing)  # type: ignore[arg-type]
        self.summary_limit = summary_limit_of(trailing)  # type: ignore[arg-type]
        listed = lease_context(answer, trailing, self.settings.instance_name)  # type: ignore[arg-type]
        present = {lease.id for lease, *_ in listed}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("answer: %s", ", ".join(f"{lease.id}={bots_pb2.LeaseState.Name(lease.state)}"
                                              for lease, *_ in listed) or "no leases")
        for lease_id in [i for i in self.leases if i not in present]:
            held = self.leases.pop(lease_id)
            if not held.completed:
                log.info("lease %s was taken away; stopping it", lease_id)
                self._cancel(held)
        for lease, meta, instance, blobs, files in listed:
            known = self.leases.get(lease.id)
            if lease.state == bots_pb2.LeaseState.CANCELLED:
                if known is not None:
                    self.leases.pop(lease.id)
                    if not known.completed:
                        log.info("lease %s cancelled by the server", lease.id)
                        self._cancel(known)
                continue
            if known is None and lease.state in (bots_pb2.LeaseState.PENDING, bots_pb2.LeaseState.ACTIVE):
                self._start(lease, meta, instance, blobs, files)

    def _start(self, lease: bots_pb2.Lease, meta: re_pb2.ExecuteOperationMetadata | None, instance: str,
               blobs: bytes, files: bytes = b"") -> None:
        burst = Burst()  # the lease's files just read stay young until the executor's own burst (cas/collector.py)
        try:
            task = task_for(lease, meta, instance, blobs, self.inline_limit, files)
        except ReapiError as err:
            burst.end()
            held = HeldLease(lease.id, None)
            held.complete(re_pb2.ExecuteResponse(status=err.to_status()))
            self.leases[lease.id] = held
            self._changed.set()
            return
        held = HeldLease(lease.id, task)
        self.leases[lease.id] = held
        held.runner = asyncio.create_task(self._execute(held), name=f"lease {lease.id}")
        asyncio.get_running_loop().call_soon(burst.end)  # after the runner's first step opened its own
        if self._draining:
            log.warning("lease %s arrived while stopping; it will be handed back if it runs too long", lease.id)
        self._changed.set()  # a new call reports the lease as ACTIVE and keeps one call outstanding

    async def _execute(self, held: HeldLease) -> None:
        assert held.task is not None
        response = await self.executor.execute(held.task)
        held.complete(response)
        self._changed.set()

    def _cancel(self, held: HeldLease) -> None:
        if held.runner is not None and not held.runner.done():
            held.runner.cancel()

    def _hand_back_running(self) -> None:
        """Stop running actions and report them UNAVAILABLE, so the server retries them elsewhere."""
        for held in self.leases.values():
            if not held.completed:
                self._cancel(held)
                held.complete(re_pb2.ExecuteResponse(
                    status=Unavailable("the worker is shutting down; retry on another worker").to_status()))
                log.info("lease %s handed back", held.lease_id)
        self._changed.set()

    async def _stop_all(self, why: str) -> None:
        runners = [held.runner for held in self.leases.values() if held.runner is not None and not held.runner.done()]
        for task in runners:
            task.cancel()
        if runners:
            log.info("%s: stopped %d running actions", why, len(runners))
            await asyncio.gather(*runners, return_exceptions=True)
        self.leases.clear()
