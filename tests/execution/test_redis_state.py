"""What only a shared state has to get right: replicas that vanish mid-work.

Two RedisState objects on one key prefix are two replicas. A replica "dies" here by
losing its heartbeat key (what Redis does 10 s after a real replica stops renewing
it), without closing anything: whatever it left in Redis must not block the others.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from google.rpc import code_pb2, status_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.interface import SchedulerSettings
from server.scheduler.operation import PreparedAction, Stage
from server.scheduler.platform import PlatformMatcher
from server.scheduler.sessions import BotRegistration, LeaseReport
from server.scheduler.state.redis.factory import redis_state
from server.scheduler.state.redis.state import RedisState
from server.scheduler.state.views import ReportOutcome
from tests.support.fake_clock import FakeClock

matcher = PlatformMatcher()
LINUX = matcher.requirements([("OSFamily", "linux")])
SETTINGS = SchedulerSettings(max_retries=1)


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisState, RedisState, FakeClock]]:
    clock = FakeClock()
    prefix = f"test:{uuid.uuid4().hex}:"
    first = redis_state(redis_url, prefix)(matcher, SETTINGS, None, clock)
    second = redis_state(redis_url, prefix)(matcher, SETTINGS, None, clock)
    yield first, second, clock
    await first.aclose()
    await second.aclose()


async def die(replica: RedisState) -> None:
    """The replica stops: its heartbeat lapses; nothing of its own is cleaned up."""
    backplane = replica.backplane
    assert backplane._heartbeat is not None
    backplane._heartbeat.cancel()
    await backplane.client.delete(backplane.key("replica", backplane.replica))


async def open_bot(state: RedisState, clock: FakeClock, bot_id: str) -> str:
    registration = BotRegistration(bot_id, "", matcher.offer([("OSFamily", "linux")]))
    await state.open_session(f"session-{bot_id}", registration, clock.now() + 60)
    return f"session-{bot_id}"


async def test_a_result_a_dead_replica_was_storing_is_queued_again(
    pair: tuple[RedisState, RedisState, FakeClock]
) -> None:
    a, b, clock = pair
    action = PreparedAction("", Digest.of(b"action"), b"", LINUX)
    await a.add_operation("op", action, 0, ("", action.action_digest), clock.now(), 60)
    session = await open_bot(a, clock, "bot")
    view = await a.claim(session, clock.now())
    assert view is not None
    [lease_id] = view.lease_ids
    report = LeaseReport(lease_id, True, status_pb2.Status(code=code_pb2.OK), re_pb2.ExecuteResponse())
    outcome = await a.report(session, "bot", True, [report], {})
    await a.end_call(session, clock.now() + 60)
    assert isinstance(outcome, ReportOutcome) and len(outcome.completed) == 1
    await die(a)  # ... before it stored the result

    assert await b.expired_sessions(clock.now()) == []  # the sweep also reaps lost results
    assert (await b.operation("op")).stage == Stage.QUEUED  # type: ignore[union-attr]
    other = await open_bot(b, clock, "other")
    view = await b.claim(other, clock.now())
    assert view is not None and len(view.lease_ids) == 1


async def test_calls_a_dead_replica_counted_do_not_keep_a_session_alive(
    pair: tuple[RedisState, RedisState, FakeClock]
) -> None:
    a, b, clock = pair
    session = await open_bot(a, clock, "bot")
    await a.report(session, "bot", True, [], {})  # a call starts on a ... and a dies in it
    clock.advance(120)
    assert await b.expired_sessions(clock.now()) == []  # a is alive: its call is in progress
    await die(a)
    [expired] = await b.expired_sessions(clock.now())
    assert expired.name == session
    assert await b.close_session(session, "bot (gone)", 1, clock.now(), if_expired=True) == []
    assert await b.session(session) is None
