"""The SchedulerState contract, transition by transition, for every state in
SCHEDULER_STATES: what the policy relies on whichever state it runs over."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.rpc import code_pb2

from cas.digest import Digest
from cas.errors import InvalidArgument
from server.scheduler.interface import SchedulerSettings
from server.scheduler.operation import OperationState, PreparedAction, Stage
from server.scheduler.owners import StateOwners
from server.scheduler.platform import PlatformMatcher, RequirementSet
from server.scheduler.results import status_response
from server.scheduler.sessions import BotRegistration, LeaseReport
from server.scheduler.state.interface import SchedulerState, StateFactory
from server.scheduler.state.views import Lost, OtherBot, ReportOutcome, Unserved
from tests.support.fake_clock import FakeClock

matcher = PlatformMatcher()
LINUX = matcher.requirements([("OSFamily", "linux")])
GRACE = 60.0


@pytest.fixture
async def state(scheduler_state: StateFactory, clock: FakeClock) -> AsyncIterator[SchedulerState]:
    state = scheduler_state(matcher, SchedulerSettings(), None, clock)
    yield state
    await state.aclose()


def action(n: int, requirements: RequirementSet = LINUX) -> PreparedAction:
    return PreparedAction("", Digest.of(f"action-{n}".encode()), b"", requirements)


async def add(state: SchedulerState, clock: FakeClock, name: str, what: PreparedAction, priority: int = 0,
              shared: bool = True) -> OperationState:
    dedup = (what.instance_name, what.action_digest) if shared else None
    added = await state.add_operation(name, what, priority, dedup, clock.now(), GRACE)
    assert isinstance(added, OperationState)
    return added


async def open_bot(state: SchedulerState, clock: FakeClock, bot_id: str, capacity: int = 1) -> str:
    registration = BotRegistration(bot_id, "", matcher.offer([("OSFamily", "linux")]), capacity=capacity)
    await state.open_session(f"session-{bot_id}", registration, clock.now() + 60)
    return f"session-{bot_id}"


async def lease_of(state: SchedulerState, session: str) -> str:
    view = await state.claim(session, 0.0)
    assert view is not None and len(view.lease_ids) == 1
    return view.lease_ids[0]


async def test_operations_share_an_execution_by_dedup_key_only(state: SchedulerState, clock: FakeClock) -> None:
    first = await add(state, clock, "op-1", action(1))
    joined = await add(state, clock, "op-2", action(1))
    assert first.stage == joined.stage == Stage.QUEUED and joined.action_digest == first.action_digest
    assert await state.queued_count() == 1
    await add(state, clock, "op-3", action(1), shared=False)
    assert (await state.queued_count(), await state.operation_count()) == (2, 3)
    with pytest.raises(InvalidArgument, match="op-1 already exists"):
        await add(state, clock, "op-1", action(2))


async def test_a_new_execution_is_refused_only_past_the_worker_grace(state: SchedulerState, clock: FakeClock) -> None:
    started = clock.now()
    clock.advance(GRACE)
    assert isinstance(await state.add_operation("op-1", action(1), 0, None, clock.now(), GRACE), OperationState)
    clock.advance(1)
    assert await state.add_operation("op-2", action(2), 0, None, clock.now(), GRACE) == Unserved(started)
    await open_bot(state, clock, "bot")
    assert await state.unserved_since(LINUX) is None


async def test_a_session_claims_by_priority_then_arrival_up_to_its_capacity(
    state: SchedulerState, clock: FakeClock
) -> None:
    for n, priority in ((1, 5), (2, 0), (3, 0)):
        await add(state, clock, f"op-{n}", action(n), priority)
    session = await open_bot(state, clock, "bot", capacity=2)
    view = await state.claim(session, clock.now())
    assert view is not None and len(view.lease_ids) == 2 and await state.queued_count() == 1
    answer = await state.answer(session, clock.now() + 60)
    assert answer is not None
    assert [le.action_digest_proto for le in answer.leases] == [action(2).action_digest.to_proto(),
                                                                action(3).action_digest.to_proto()]


async def test_a_completed_lease_awaits_its_result_and_a_cancellation_wins(
    state: SchedulerState, clock: FakeClock
) -> None:
    await add(state, clock, "op-1", action(1))
    session = await open_bot(state, clock, "bot")
    lease_id = await lease_of(state, session)
    assert await state.report(session, "intruder", True, [LeaseReport(lease_id, True)], {}) == OtherBot("bot")
    outcome = await state.report(session, "bot", True, [LeaseReport(lease_id, True)], {})
    assert isinstance(outcome, ReportOutcome) and not outcome.listed
    [done] = outcome.completed
    assert (done.lease_id, done.bot_id, done.action) == (lease_id, "bot", action(1))
    assert await state.awaits_result(done.execution_id)
    cancelled = status_response(code_pb2.CANCELLED, "cancelled")
    assert await state.cancel_operation("op-1", cancelled, cancelled, clock.now())
    assert not await state.awaits_result(done.execution_id)
    assert not await state.finish_execution(done.execution_id, status_response(code_pb2.OK, ""), clock.now())
    operation = await state.operation("op-1")
    assert operation is not None and operation.done and operation.response == cancelled


async def test_past_the_retry_budget_an_execution_is_left_for_the_policy_to_fail(
    state: SchedulerState, clock: FakeClock
) -> None:
    await add(state, clock, "op-1", action(1))
    session = await open_bot(state, clock, "bot")
    for attempt in (1, 2):
        lease_id = await lease_of(state, session)
        outcome = await state.report(session, "bot", True, [LeaseReport(lease_id, True)], {})
        assert isinstance(outcome, ReportOutcome)
        [done] = outcome.completed
        retried = await state.retry_execution(done.execution_id, f"bot (failure {attempt})", 1, clock.now())
        await state.end_call(session, clock.now() + 60)
        failures = tuple(f"bot (failure {n})" for n in range(1, attempt + 1))
        assert retried == Lost(done.execution_id, action(1), failures, requeued=attempt == 1)
    assert await state.awaits_result(done.execution_id) and await state.queued_count() == 0
    assert await state.finish_execution(done.execution_id, status_response(code_pb2.UNAVAILABLE, "lost"), clock.now())
    operation = await state.operation("op-1")
    assert operation is not None and operation.done and operation.response is not None
    assert operation.response.status.code == code_pb2.UNAVAILABLE


async def test_only_an_expired_session_without_a_call_is_closed_as_expired(
    state: SchedulerState, clock: FakeClock
) -> None:
    await add(state, clock, "op-1", action(1))
    session = await open_bot(state, clock, "bot")
    lease_id = await lease_of(state, session)
    assert await state.report(session, "bot", True, [LeaseReport(lease_id, False)], {}) is not None  # a call in progress
    later = clock.now() + 61
    assert await state.expired_sessions(later) == []
    assert await state.close_session(session, "bot (expired)", 3, later, if_expired=True) is None
    await state.end_call(session, clock.now() + 60)
    assert [s.name for s in await state.expired_sessions(later)] == [session]
    [lost] = await state.close_session(session, "bot (expired)", 3, later, if_expired=True) or []
    assert lost.requeued and lost.failed_workers == ("bot (expired)",)
    assert await state.session(session) is None and await state.session_of_bot("bot") is None
    assert await state.queued_count() == 1  # its lease went back to the queue


async def test_a_watch_follows_its_operation_after_the_name_is_forgotten(
    state: SchedulerState, clock: FakeClock
) -> None:
    await add(state, clock, "op-1", action(1))
    watch = await state.watch("op-1", replay=True)
    assert watch is not None
    first = await watch.next()
    assert first is not None and first.stage == Stage.QUEUED and await watch.next() is None
    woken = watch.changed()
    assert await state.forget_operation("op-1") and await state.operation("op-1") is None
    await lease_of(state, await open_bot(state, clock, "bot"))
    await woken
    executing = await watch.next()
    assert executing is not None and executing.stage == Stage.EXECUTING and executing.name == "op-1"
    assert await state.watch("op-1", replay=False) is None


async def test_owners_are_kept_with_operations_and_sessions(state: SchedulerState, clock: FakeClock) -> None:
    """The principals server/auth checks before an identity acts on a name (StateOwners)."""
    shared = ("", action(1).action_digest)
    await state.add_operation("op-1", action(1), 0, shared, clock.now(), GRACE, "token:ci")
    await state.add_operation("op-2", action(1), 0, shared, clock.now(), GRACE, "jwt:dev")
    registration = BotRegistration("bot", "", matcher.offer([("OSFamily", "linux")]), owner="token:workers")
    await state.open_session("session-bot", registration, clock.now() + 60)
    owners = StateOwners(state)
    assert await owners.operation_owner("op-1") == "token:ci"
    assert await owners.operation_owner("op-2") == "jwt:dev"  # joined the same execution, still its own
    assert await owners.operation_owner("op-9") is None
    assert await owners.session_owner("session-bot") == "token:workers"
    assert await owners.bot_owner("bot") == "token:workers"
    assert await owners.bot_owner("another-bot") is None


async def test_a_running_lease_can_be_ended_and_its_bot_is_told(state: SchedulerState, clock: FakeClock) -> None:
    await add(state, clock, "op-1", action(1))
    session = await open_bot(state, clock, "bot")
    clock.advance(5)
    lease_id = await lease_of(state, session)
    assert await state.overdue_leases(100.0, 60.0, 60.0) == []  # lease_of claims at 0.0: within its timeout
    [running] = await state.overdue_leases(clock.now(), 1.0, 1.0)
    assert (running.lease_id, running.bot_id, running.action) == (lease_id, "bot", action(1))
    overdue = status_response(code_pb2.DEADLINE_EXCEEDED, "overdue")
    assert await state.end_lease(lease_id, overdue, clock.now())
    assert not await state.end_lease(lease_id, overdue, clock.now())  # taken already
    assert await state.overdue_leases(clock.now(), 1.0, 1.0) == []
    operation = await state.operation("op-1")
    assert operation is not None and operation.done and operation.response == overdue
    answer = await state.answer(session, clock.now() + 60)
    assert answer is not None and [(le.lease_id, le.cancelled) for le in answer.leases] == [(lease_id, True)]
