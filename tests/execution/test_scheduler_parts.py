"""The scheduler's parts without gRPC: platform matching, queues, log stream store, config."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cas.config import ConfigError
from cas.digest import Digest
from cas.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from server.logstreams import LogStreamStore
from server.scheduler.config import parse_execution_config
from server.scheduler.operation import PreparedAction
from server.scheduler.platform import MatchPolicy, PlatformMatcher, RequirementSet
from server.scheduler.state.memory.queues import ActionQueues
from server.scheduler.state.memory.records import Execution
from tests.support.fake_clock import FakeClock

matcher = PlatformMatcher()


def test_requirements_normalise_key_spellings_and_aliases() -> None:
    a = matcher.requirements([("Arch", "AMD64"), ("os", "Linux")])
    b = matcher.requirements([("ISA", "x86-64"), ("OSFamily", "linux")])
    c = matcher.requirements([("cpu_arch", "x86_64"), ("OSFamily", "LINUX")])
    assert a == b == c
    assert a.describe() == "ISA=x86-64, OSFamily=linux"
    assert matcher.requirements([("cpu_arch", "aarch64")]) == matcher.requirements([("ISA", "arm64")])


def test_policies_exact_all_of_minimum_ignore() -> None:
    m = PlatformMatcher({"pool": MatchPolicy.EXACT, "container-image": MatchPolicy.IGNORE})
    worker = m.offer([("ISA", "x86_64"), ("ISA", "x86-avx2"), ("cpu_count", "8"), ("pool", "fast"),
                      ("OSFamily", "Linux")])
    assert m.satisfies(worker, m.requirements([("ISA", "x86-64"), ("ISA", "x86-avx2")]))
    assert not m.satisfies(worker, m.requirements([("ISA", "x86-64"), ("ISA", "x86-avx-512")]))
    assert m.satisfies(worker, m.requirements([("cpu_count", "8")]))
    assert not m.satisfies(worker, m.requirements([("cpu_count", "9")]))
    assert m.satisfies(worker, m.requirements([("pool", "fast"), ("container-image", "anything")]))
    assert not m.satisfies(worker, m.requirements([("pool", "slow")]))
    assert m.requirements([("container-image", "x")]) == RequirementSet()
    with pytest.raises(InvalidArgument, match="must be a number"):
        m.requirements([("cpu_count", "eight")])


def test_explain_names_what_no_worker_offers() -> None:
    offers = [matcher.offer([("ISA", "x86-64"), ("OSFamily", "linux")]),
              matcher.offer([("ISA", "arm-a64"), ("OSFamily", "macos")])]
    need = matcher.requirements([("ISA", "riscv64"), ("OSFamily", "linux")])
    assert matcher.explain(need, offers) == (
        "no connected worker offers ISA=riscv64 (workers offer ISA: arm-a64, x86-64)"
    )
    combo = matcher.requirements([("ISA", "arm-a64"), ("OSFamily", "linux")])
    assert "no single connected worker offers all of" in matcher.explain(combo, offers)
    assert "no worker is connected" in matcher.explain(combo, [])


def _execution(n: int, priority: int, key: RequirementSet = RequirementSet()) -> Execution:
    action = PreparedAction("", Digest.of(str(n).encode()), b"", key)
    return Execution(id=str(n), action=action, priority=priority, seq=n, queued_at=0.0)


def test_queues_order_by_priority_then_arrival_across_matching_keys() -> None:
    queues = ActionQueues()
    linux = matcher.requirements([("OSFamily", "linux")])
    items = [_execution(1, 5), _execution(2, 0, linux), _execution(3, 0), _execution(4, -2, linux)]
    for item in items:
        queues.push(item)
    queues.discard(items[2])
    queues.discard(items[2])  # twice is harmless
    assert len(queues) == 3
    assert [queues.pop_best([RequirementSet()]).id for _ in range(1)] == ["1"]  # type: ignore[union-attr]
    assert queues.pop_best([RequirementSet()]) is None
    assert [queues.pop_best([linux, RequirementSet()]).id for _ in range(2)] == ["4", "2"]  # type: ignore[union-attr]
    assert len(queues) == 0


async def test_log_stream_store_tails_trims_and_drops() -> None:
    clock = FakeClock()
    store = LogStreamStore(max_bytes=8, retention=10, clock=clock)
    stream = store.create("p")
    reader = store.read(stream.name)
    store.append(stream, 0, b"abcd")
    assert await anext(reader) == b"abcd"
    pending = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)
    assert not pending.done()
    store.append(stream, 4, b"efghij")  # 10 bytes written, the first 2 trimmed
    assert await pending == b"efghij"
    with pytest.raises(OutOfRange, match="dropped its first 2 bytes"):
        await anext(store.read(stream.name, offset=1))
    assert [c async for c in store.read(stream.name, offset=2, limit=3)] == [b"cde"]
    store.append(stream, 10, b"", finish=True)
    with pytest.raises(StopAsyncIteration):
        await anext(reader)
    with pytest.raises(FailedPrecondition, match="already finished"):
        store.append(stream, 10, b"more")
    clock.advance(11)
    store.tick()
    with pytest.raises(NotFound):
        store.for_read(stream.name)


def test_idle_unfinished_streams_are_closed_then_dropped() -> None:
    clock = FakeClock()
    store = LogStreamStore(idle_timeout=100, clock=clock)
    stream = store.create("")
    assert stream.name.startswith("logstreams/")
    clock.advance(101)
    store.tick()
    assert len(store) == 0


def test_execution_config_errors_name_the_key() -> None:
    assert parse_execution_config({}).settings.max_retries == 3
    config = parse_execution_config({"bot_session_timeout": "2m", "platform": {"pool": "minimum"}})
    assert config.settings.bot_session_timeout == 120
    assert config.matcher().policy("pool") is MatchPolicy.MINIMUM
    assert (config.input_cache_size, config.inline_blob_limit) == (64 << 20, 1 << 20)
    sized = parse_execution_config({"input_cache_size": "1GiB", "inline_blob_limit": 0})
    assert (sized.input_cache_size, sized.inline_blob_limit) == (1 << 30, 0)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"inline_blob_limit": "big"}, "inline_blob_limit"),
        ({"colour": 1}, "[execution]: unknown key 'colour'"),
        ({"platform": {"ISA": "fuzzy"}}, "unknown matching policy 'fuzzy'"),
        ({"max_retries": "3"}, "max_retries"),
        ({"progress_interval": 45}, "at most 30"),
        ({"min_priority": 5, "max_priority": 1}, "min_priority"),
    ]
    for bad, fragment in cases:
        with pytest.raises(ConfigError) as caught:
            parse_execution_config(bad)
        assert fragment in str(caught.value)
