"""RedisState: the scheduler's state in Redis, shared by every server replica.

Each transition of SchedulerState is one Lua script (lua/), atomic in Redis, so replicas never
see each other's transitions half-done; this class turns arguments into script arguments and
replies into views. What only one process can hold stays local and is rebuilt from Redis: the
futures of held calls and watches (woken over pub/sub, wakeups.py), the inline blobs each bot
was sent (session_answers.py).

Replicas come and go: each keeps a heartbeat key alive (backplane.py). The calls in
progress it counts for a session, and the completed leases whose results it is storing,
count only while its heartbeat lives; so when a replica dies, its bots' sessions expire
as usual and results it never stored are queued again (``reap_awaiting``, run with every
expiry sweep), within the retry budget. Keys: README.md.

With ``dispatch = "locality"``, what the rules read lives in Redis too (each bot's summary
on its session, each action's sketch on its execution), so a summary a bot sends to one
replica steers dispatch on every other; the choices are made in Python (placement.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from google.rpc import code_pb2

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.clock import Clock
from server.scheduler.farm import FarmSnapshot
from server.scheduler.interface import SchedulerSettings
from server.scheduler.operation import OperationState, PreparedAction
from server.scheduler.platform import PlatformMatcher, RequirementSet, WorkerOffer
from server.scheduler.results import status_response
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, SessionAnswer
from server.scheduler.state.interface import SchedulerState
from server.scheduler.state.redis.backplane import Backplane
from server.scheduler.state.redis.catalog import Catalog
from server.scheduler.state.redis.farm_view import FarmView
from server.scheduler.state.redis.codec import (
    Registrations, dedup_arg, digest_of, number, operation_state, registration_json, session_view, text,
    timeout_arg, timeout_of,
)
from server.scheduler.state.redis.placement import RedisPlacement, summary_args
from server.scheduler.state.redis.session_answers import SessionAnswers
from server.scheduler.state.redis.watch import RedisWatch
from server.scheduler.state.views import (
    CompletedLease, DedupKey, Lost, OtherBot, ReportOutcome, RunningLease, SessionView, Unserved,
)

log = logging.getLogger("reapi.scheduler.redis")

PAGE = 500
LOST_RESULT_NOTE = "its result was lost: the server replica storing it stopped"


class RedisState(SchedulerState):
    def __init__(
        self, backplane: Backplane, matcher: PlatformMatcher, settings: SchedulerSettings, clock: Clock, *,
        logs: bool = True,
    ) -> None:
        self.backplane = backplane
        backplane.configure(logs, settings.operation_retention, settings.dispatch)
        self.settings = settings
        self.clock = clock
        self.started_at = clock.now()
        self.client = backplane.client
        self.guard = backplane.guard
        self.scripts = backplane.scripts
        self.wakeups = backplane.wakeups
        self.prefix = backplane.prefix
        self.catalog = Catalog(matcher, self.scripts)
        self.registrations = Registrations()
        self._holds: dict[asyncio.Future[None], tuple[str, str]] = {}
        self.answers = SessionAnswers(self.registrations)
        self._farm_view = FarmView(lambda: self._call("farm"), self.catalog, clock)
        self.placement = RedisPlacement(self._call, settings.dispatch, clock) if settings.dispatch.locality else None
        if self.placement is not None and self.placement.holder_wait:
            self.wakeups.on_wait_over = self._wait_over

    async def _started(self) -> None:
        await self.backplane.started()

    async def aclose(self) -> None:
        if self.placement is not None:
            await self.placement.aclose()
        await self.backplane.release()

    def _wait_over(self, replica: str, execution_id: str) -> None:
        """A wait for a holder ended in a script this replica ran: this replica places it."""
        if replica == self.backplane.replica and self.placement is not None:
            self.placement.on_wait_over(execution_id)

    async def _call(self, name: str, *args: object) -> object:
        await self.backplane.started()
        return await self.scripts.call(name, *args)  # type: ignore[arg-type]

    async def _action(
        self, instance: bytes, hash_: bytes, size: bytes, function: bytes, action_bytes: bytes, rid: bytes,
        do_not_cache: bytes, timeout: bytes,
    ) -> PreparedAction:
        """The PreparedAction an execution's hash fields describe."""
        return PreparedAction(text(instance), digest_of(hash_, size, function), action_bytes,
                              await self.catalog.requirements(text(rid)), do_not_cache == b"1", timeout_of(timeout))

    async def _lost(self, reply: list[Any]) -> Lost:
        eid, requeued, instance, hash_, size, function, action_bytes, rid, do_not_cache, notes, timeout = reply
        action = await self._action(instance, hash_, size, function, action_bytes, rid, do_not_cache, timeout)
        return Lost(text(eid), action, tuple(text(n) for n in notes), requeued == b"1")

    async def _requeued(self, lost: list[Lost], now: float) -> list[Lost]:
        """With locality, the executions queued again go to the bots the rule picks."""
        if self.placement is not None:
            await self.placement.whole(self.placement.place([item.execution_id for item in lost if item.requeued], now))
        return lost

    # -- operations and executions ---------------------------------------------

    async def add_operation(
        self, name: str, action: PreparedAction, priority: int, dedup: DedupKey | None, now: float,
        worker_grace: float, owner: str = "",
    ) -> OperationState | Unserved:
        rid = await self.catalog.requirement_id(action.requirements)
        if self.placement is None:
            return await self._add_operation(name, action, rid, priority, dedup, now, worker_grace, owner)
        return await self.placement.whole(
            self._add_operation(name, action, rid, priority, dedup, now, worker_grace, owner), deciding=True)

    async def _add_operation(
        self, name: str, action: PreparedAction, rid: str, priority: int, dedup: DedupKey | None, now: float,
        worker_grace: float, owner: str,
    ) -> OperationState | Unserved:
        digest = action.action_digest
        reply = await self._call(
            "add_operation", name, action.instance_name, digest.hash, digest.size_bytes, digest.function,
            action.action_bytes, rid, "1" if action.do_not_cache else "0", priority, dedup_arg(dedup), number(now),
            number(worker_grace), number(self.started_at), owner, timeout_arg(action.timeout),
            *([action.sketch] if self.placement else []),
        )
        assert isinstance(reply, list)
        if reply[0] == b"exists":
            raise InvalidArgument(f"operation {name} already exists")
        if reply[0] == b"unserved":
            return Unserved(float(reply[1]))
        if self.placement is not None and len(reply) > 3 and reply[3]:  # queued while bots could take it
            await self.placement.choose_bot(text(reply[1]), reply[3], now)
        return operation_state(reply[2])

    async def watch(self, name: str, replay: bool) -> RedisWatch | None:
        reply = await self._call("watch_open", name, "1" if replay else "0")
        if reply is None:
            return None
        assert isinstance(reply, list)
        return RedisWatch(self, name, text(reply[0]), int(reply[1]))

    async def operation(self, name: str) -> OperationState | None:
        reply = await self._call("op_states", name, "")
        assert isinstance(reply, list)
        return operation_state(reply[0]) if reply[0] else None

    async def operations(self, instance_name: str | None, after: int) -> AsyncIterator[tuple[int, OperationState]]:
        await self._started()
        while True:
            with self.guard.calling("listing operations"):
                page: list[Any] = await self.client.zrangebyscore(f"{self.prefix}ops", f"({after}", "+inf", start=0, num=PAGE,
                                                       withscores=True)
            if not page:
                return
            names = [text(name) for name, _ in page]
            seqs = [int(seq) for _, seq in page]
            states = await self.scripts.call("op_states", *[part for n in names for part in (n, "")])
            for seq, reply in zip(seqs, states):
                if reply:
                    state = operation_state(reply)
                    if instance_name is None or state.instance_name == instance_name:
                        yield seq, state
            after = seqs[-1]

    async def cancel_operation(
        self, name: str, response: re_pb2.ExecuteResponse, stop_response: re_pb2.ExecuteResponse, now: float
    ) -> bool:
        reply = await self._call("cancel_operation", name, response.SerializeToString(),
                                 stop_response.SerializeToString(), number(now))
        return reply == 1

    async def forget_operation(self, name: str) -> bool:
        return await self._call("forget_operation", name) == 1

    async def drop_finished(self, now: float, retention: float) -> None:
        while await self._call("drop_finished", number(now), number(now - retention), PAGE) == 1:
            pass

    async def awaits_result(self, execution_id: str) -> bool:
        return await self._call("awaits_result", execution_id) == 1

    async def finish_execution(self, execution_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        return await self._call("finish_execution", execution_id, response.SerializeToString(), number(now)) == 1

    async def overdue_leases(self, now: float, default_timeout: float, grace: float) -> list[RunningLease]:
        leases = []
        reply = await self._call("overdue_leases", number(now), number(default_timeout), number(grace))
        assert isinstance(reply, list)
        for item in reply:
            lease_id, eid, instance, hash_, size, function, action_bytes, rid, do_not_cache, timeout, bot, at = item
            action = await self._action(instance, hash_, size, function, action_bytes, rid, do_not_cache, timeout)
            leases.append(RunningLease(text(lease_id), text(eid), action, text(bot), float(at)))
        return leases

    async def end_lease(self, lease_id: str, response: re_pb2.ExecuteResponse, now: float) -> bool:
        return await self._call("end_lease", lease_id, response.SerializeToString(), number(now)) == 1

    async def retry_execution(self, execution_id: str, note: str, retry_budget: int, now: float) -> Lost | None:
        reply = await self._call("retry_execution", execution_id, note, retry_budget, number(now))
        assert isinstance(reply, list)
        return (await self._requeued([await self._lost(reply[1])], now))[0] if reply[0] == b"lost" else None

    # -- bot sessions ------------------------------------------------------------

    async def open_session(self, name: str, registration: BotRegistration, expires_at: float,
                           summary: BotSummary | None = None) -> None:
        oid = await self.catalog.offer_id(registration.offer)
        locality = ["1" if registration.hold_when_busy else "0", *summary_args(summary)] if self.placement else []
        version = await self._call("open_session", name, registration.bot_id, registration_json(registration), oid,
                                   registration.capacity, "1" if registration.healthy else "0", number(expires_at),
                                   *locality)
        if self.placement is not None:
            self.placement.summaries.remember(name, version, summary)

    async def session_of_bot(self, bot_id: str) -> str | None:
        await self._started()
        name = await self.scripts.command("finding a bot's session", "HGET", f"{self.prefix}bots", bot_id)
        return None if name is None else text(name)

    async def session(self, name: str) -> SessionView | None:
        reply = await self._call("session", name)
        return None if reply is None else session_view(reply, self.registrations)  # type: ignore[arg-type]

    async def close_session(
        self, name: str, note: str, retry_budget: int, now: float, *, if_expired: bool = False
    ) -> list[Lost] | None:
        reply = await self._call("close_session", name, note, retry_budget, number(now), "1" if if_expired else "0")
        if reply is None:
            return None
        assert isinstance(reply, list)
        self.answers.forget(name)
        return await self._requeued([await self._lost(item) for item in reply[1]], now)

    async def report(
        self,
        name: str,
        bot_id: str,
        healthy: bool,
        reports: Sequence[LeaseReport],
        partial_metadata: Mapping[str, re_pb2.ExecutedActionMetadata], summary: BotSummary | None = None,
    ) -> ReportOutcome | OtherBot | None:
        args: list[object] = [name, bot_id, "1" if healthy else "0", number(self.clock.now()), len(reports)]
        for item in reports:
            args += [item.lease_id, "1" if item.completed else "0"]
        args.append(len(partial_metadata))
        for lease_id, metadata in partial_metadata.items():
            args += [lease_id, metadata.SerializeToString()]
        if self.placement is not None:
            args += summary_args(summary)
        reply = await self._call("report", *args)
        if reply is None:
            return None
        assert isinstance(reply, list)
        if reply[0] == b"other":
            return OtherBot(text(reply[1]))
        registration = self.registrations.decode(reply[1])
        if self.placement is not None:
            self.placement.summaries.remember(name, reply[4], summary)
        by_lease = {item.lease_id: item for item in reports}
        completed = []
        for item in reply[3]:
            lease_id, eid, instance, hash_, size, function, action_bytes, rid, do_not_cache, queued_at, assigned_at, \
                timeout = item
            action = await self._action(instance, hash_, size, function, action_bytes, rid, do_not_cache, timeout)
            completed.append(CompletedLease(
                text(lease_id), text(eid), action, float(queued_at), registration.bot_id, float(assigned_at),
                registration.inline_limit, by_lease[text(lease_id)],
            ))
        return ReportOutcome(frozenset(text(lease_id) for lease_id in reply[2]), completed)

    async def claim(self, name: str, now: float) -> SessionView | None:
        if self.placement is None:
            reply = await self._call("claim", name, number(now))
        elif reply := await self.placement.claim(name, now):  # the call's answer too (session_answers.py)
            self.answers.kept.keep(name, reply[2] if len(reply) > 2 else None)
            reply = reply[1]
        return None if reply is None else session_view(reply, self.registrations)  # type: ignore[arg-type]

    async def hold(self, name: str) -> asyncio.Future[None]:
        await self._started()
        self.answers.kept.take(name)  # a held call's answer comes after its wait
        waiter = self.wakeups.session_waiter(name)
        token = os.urandom(8).hex()
        self._holds[waiter.future] = (name, token)
        try:
            last_wakeup = await self.scripts.call("hold", name, token, number(self.clock.now()))
        except BaseException:
            await self.release_hold(name, waiter.future)
            raise
        if last_wakeup is None:
            waiter.wake()  # closed meanwhile, or work arrived since the claim: answer at once
        elif int(last_wakeup) < 0:  # locality: work queued since the claim, taken by the rule
            await self.claim(name, self.clock.now())
            waiter.wake()
        else:
            waiter.arm(int(last_wakeup))
        return waiter.future

    async def release_hold(self, name: str, waiter: object) -> None:
        assert isinstance(waiter, asyncio.Future)
        self.answers.kept.take(name)  # one kept by a claim of hold's: read after the wait instead
        self.wakeups.forget_session_waiter(name, waiter)
        held = self._holds.pop(waiter, None)
        if held is not None:
            await self._call("release_hold", name, held[1])

    async def answer(self, name: str, expire_time: float) -> SessionAnswer | None:
        reply = self.answers.kept.take(name) or await self._call("answer", name)  # kept: its claim's
        return None if reply is None else self.answers.of(name, reply, expire_time)  # type: ignore[arg-type]

    async def end_call(self, name: str, expires_at: float) -> None:
        await self._call("end_call", name, number(expires_at))

    async def expired_sessions(self, now: float) -> list[SessionView]:
        await self._reap_lost_results(now)
        if self.placement is not None and self.placement.holder_wait:
            await self.placement.whole(self.placement.end_waits(now))  # every replica's tick: no wait outlives its deadline
        reply = await self._call("expired_sessions", number(now))
        assert isinstance(reply, list)
        return [session_view(item, self.registrations) for item in reply]

    async def _reap_lost_results(self, now: float) -> None:
        """Results a dead replica was storing: queued again, or failed past the budget."""
        reply = await self._call("reap_awaiting", LOST_RESULT_NOTE, self.settings.max_retries, number(now))
        assert isinstance(reply, list)
        for lost in await self._requeued([await self._lost(item) for item in reply], now):
            log.warning("%s of %s%s", LOST_RESULT_NOTE, lost.action.action_digest,
                        "; queued again" if lost.requeued else "; past its retry budget")
            if lost.requeued:
                continue
            tried = "; ".join(lost.failed_workers)
            response = status_response(
                code_pb2.UNAVAILABLE,
                f"action {lost.action.action_digest} was lost by {len(lost.failed_workers)} workers, "
                f"more than its retry budget of {self.settings.max_retries} allows: {tried}",
            )
            await self.finish_execution(lost.execution_id, response, now)

    # -- the worker index --------------------------------------------------------

    async def unserved_since(self, requirements: RequirementSet) -> float | None:
        rid = await self.catalog.requirement_id(requirements)
        reply = await self._call("unserved_since", rid, number(self.started_at))
        return None if reply is None else float(reply)  # type: ignore[arg-type]

    async def offers(self) -> list[WorkerOffer]:
        reply = await self._call("live_offers")
        assert isinstance(reply, list)
        return await self.catalog.offers([text(oid) for oid in reply])

    async def queued_requirements(self) -> list[RequirementSet]:
        await self._started()
        rids = await self.scripts.command("listing queues", "SMEMBERS", f"{self.prefix}queues")
        return [await self.catalog.requirements(text(rid)) for rid in rids]

    async def fail_queued(self, requirements: RequirementSet, response: re_pb2.ExecuteResponse, now: float) -> None:
        rid = await self.catalog.requirement_id(requirements)
        await self._call("fail_queued", rid, response.SerializeToString(), number(now))

    # -- introspection -------------------------------------------------------------

    def farm(self) -> FarmSnapshot:
        """The snapshot last fetched (farm_view.py): the console and metrics read it from
        synchronous code."""
        return self._farm_view.snapshot()

    async def queued_count(self) -> int:
        await self._started()
        return int(await self.scripts.command("counting queued actions", "GET", f"{self.prefix}queued") or 0)

    async def operation_count(self) -> int:
        await self._started()
        return int(await self.scripts.command("counting operations", "ZCARD", f"{self.prefix}ops"))
