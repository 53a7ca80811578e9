"""Locality dispatch in the Redis state when another replica acts between the two
scripts of a decision (redis/placement.py): the choice falls back, nothing is lost or
given twice. And with ``fifo``, none of locality's fields is written.

Two RedisState objects on one key prefix are two replicas; a wrapper around the
placement's script calls lets the second act just before the first applies its choice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.interface import SchedulerSettings
from server.scheduler.locality import FIFO, LOCALITY, Dispatch, sketch_of
from server.scheduler.operation import PreparedAction, Stage
from server.scheduler.platform import PlatformMatcher
from server.scheduler.sessions import BotRegistration, BotSummary
from server.scheduler.state.redis.factory import redis_state
from server.scheduler.state.redis.state import RedisState
from tests.execution.locality_helpers import holding
from tests.support.fake_clock import FakeClock

matcher = PlatformMatcher()
LINUX = matcher.requirements([("OSFamily", "linux")])
STOPPED = re_pb2.ExecuteResponse()


@pytest.fixture
async def two_states(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisState, RedisState, FakeClock]]:
    dispatch: Dispatch = getattr(request, "param", LOCALITY)
    clock = FakeClock()
    prefix = f"test:{uuid.uuid4().hex}:"
    settings = SchedulerSettings(max_retries=1, dispatch=dispatch)
    first = redis_state(redis_url, prefix)(matcher, settings, None, clock)
    second = redis_state(redis_url, prefix)(matcher, settings, None, clock)
    yield first, second, clock
    await first.aclose()
    await second.aclose()


def files_of(name: str) -> list[Digest]:
    return [Digest.of(name.encode() + bytes([i]) * (64 << 10)) for i in range(3)]


def action(name: str) -> PreparedAction:
    files = files_of(name)
    return PreparedAction("", Digest.of(name.encode()), b"", LINUX,
                          sketch=sketch_of(files, sum(d.size_bytes for d in files)))


async def open_bot(state: RedisState, clock: FakeClock, bot_id: str, holds: Iterable[Digest] = ()) -> str:
    registration = BotRegistration(bot_id, "", matcher.offer([("OSFamily", "linux")]))
    await state.open_session(bot_id, registration, clock.now() + 60, BotSummary(cache=holding(holds)))
    return bot_id


async def execution_of(state: RedisState, operation: str) -> bytes:
    eid = await state.client.hget(state.backplane.key("o", operation), "exec")
    assert isinstance(eid, bytes)
    return eid


def before_script(state: RedisState, script: str, step: object) -> list[tuple[object, ...]]:
    """Run ``step(args)`` just before the placement's next ``script`` call; returns the calls seen."""
    assert state.placement is not None
    original = state.placement._call
    seen: list[tuple[object, ...]] = []

    async def call(name: str, *args: object) -> object:
        if name == script:
            seen.append(args)
            if len(seen) == 1:
                await step(args)  # type: ignore[operator]
        return await original(name, *args)

    state.placement._call = call
    return seen


async def test_the_chosen_bot_gone_meanwhile_the_action_goes_to_the_one_waiting_longest(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, b, clock = two_states
    lib = action("lib")
    first = await open_bot(a, clock, "first")
    holder = await open_bot(a, clock, "holder", files_of("lib"))
    await a.hold(first)
    await a.hold(holder)

    async def close_the_chosen(args: tuple[object, ...]) -> None:
        assert args[1] == holder.encode()  # the rule chose the holder ...
        await b.close_session(holder, "gone", 1, clock.now())  # ... which another replica closes now

    places = before_script(a, "place", close_the_chosen)
    await a.add_operation("op", lib, 0, None, clock.now(), 60)
    assert len(places) == 1
    view = await a.session(first)
    assert view is not None and len(view.lease_ids) == 1  # not lost: the other waiting bot has it
    assert (await a.operation("op")).stage is Stage.EXECUTING  # type: ignore[union-attr]
    assert await a.queued_count() == 0


async def test_a_claim_whose_pick_was_taken_meanwhile_takes_its_next_choice(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    a, b, clock = two_states
    for name in ("x", "held", "z"):
        await a.add_operation(name, action(name), 0, None, clock.now(), 60)
    bot = await open_bot(a, clock, "bot", files_of("held"))

    async def take_the_pick(args: tuple[object, ...]) -> None:
        await b.cancel_operation("held", STOPPED, STOPPED, clock.now())  # out of the queue before the claim applies

    attempts = before_script(a, "claim_chosen", take_the_pick)
    view = await a.claim(bot, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    [ranked] = attempts
    assert ranked[2:5] == (3, await execution_of(a, "held"), await execution_of(a, "x"))  # its choice, then the oldest

    assert (await a.operation("x")).stage is Stage.EXECUTING  # type: ignore[union-attr]
    assert (await a.operation("z")).stage is Stage.QUEUED  # type: ignore[union-attr]
    assert await a.queued_count() == 1


@pytest.mark.parametrize("two_states", [FIFO], indirect=True)
async def test_fifo_writes_none_of_localitys_fields(two_states: tuple[RedisState, RedisState, FakeClock]) -> None:
    a, _, clock = two_states
    assert a.placement is None
    await open_bot(a, clock, "bot", files_of("lib"))
    await a.add_operation("op", action("lib"), 0, None, clock.now(), 60)
    client, key = a.client, a.backplane.key
    assert not await client.hexists(key("s", "bot"), "sum")
    eid = await execution_of(a, "op")
    assert await client.hget(key("e", eid.decode()), "stage") is not None
    assert not await client.hexists(key("e", eid.decode()), "sk")


async def test_a_lease_given_between_a_claim_and_its_hold_is_answered_at_once(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    """A bot's claim found nothing: it is on its way back, and a new action whose inputs it
    holds goes to it (not to the bot in a held call); its call must not then hold."""
    a, b, clock = two_states
    bot = await open_bot(a, clock, "bot", files_of("lib"))
    other = await open_bot(a, clock, "other")
    await a.hold(other)
    view = await a.claim(bot, clock.now())
    assert view is not None and view.lease_ids == ()
    await b.add_operation("op", action("lib"), 0, None, clock.now(), 60)  # between its claim and its hold
    view = await a.session(bot)
    assert view is not None and len(view.lease_ids) == 1
    waiter = await a.hold(bot)
    assert waiter.done()  # answered at once, with the lease
    other_view = await a.session(other)
    assert other_view is not None and other_view.lease_ids == ()


async def test_a_claim_asks_no_other_bot_about_an_action_the_claiming_bot_expects_all_of(
    two_states: tuple[RedisState, RedisState, FakeClock],
) -> None:
    """It is MINE to the claiming bot whatever the others hold (Python asks no estimate),
    so claim_window leaves its keys out of what it asks the others (one string of keys
    per bot, for the whole window); they are still asked about the rest of the window,
    and the bot takes the one it expects, not the oldest."""
    a, _, clock = two_states
    mine = await open_bot(a, clock, "mine")
    other = await open_bot(a, clock, "other")
    older, lib = action("x"), action("lib")
    await a.add_operation("x", older, 0, None, clock.now(), 60)
    await a.add_operation("lib", lib, 0, None, clock.now(), 60)

    def keys(prepared: PreparedAction) -> list[bytes]:
        return [prepared.sketch[i:i + 8] for i in range(8, len(prepared.sketch), 16)]

    await a.client.zadd(a.backplane.key("sx", mine), {k: 1 for k in keys(lib)})
    await a.client.zadd(a.backplane.key("sx", other), {k: 1 for k in keys(lib) + keys(older)})
    assert a.placement is not None
    original = a.placement._call
    replies: list[Any] = []

    async def call(name: str, *args: object) -> object:
        reply = await original(name, *args)
        if name == "claim_window":
            replies.append(reply)
        return reply

    a.placement._call = call
    view = await a.claim(mine, clock.now())
    assert view is not None and len(view.lease_ids) == 1
    [[verb, _, _, window, others, _]] = replies
    assert verb == b"choose"
    assert [item[3] for item in window] == [b"", b"".join(keys(lib))]
    [[name, _, expected, *_]] = others
    assert name == other.encode() and expected == b"".join(keys(older))  # not lib's, which it expects too
    assert (await a.operation("lib")).stage is Stage.EXECUTING  # type: ignore[union-attr]
    assert (await a.operation("x")).stage is Stage.QUEUED  # type: ignore[union-attr]
