"""Validation remembers the Commands and Directories it checked (server/scheduler/input_cache.py):
a later action sharing them costs no reads, yet a CAS that lacks them is still told apart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument, MissingBlobs
from cas.memory import MemoryStore
from cas.store import ForwardingStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.input_cache import (
    ENTRY_OVERHEAD,
    CheckedCommand,
    CheckedDirectory,
    InputCache,
    SentBlobs,
    wire_size,
)
from server.scheduler.platform import PlatformMatcher
from server.scheduler.validation import ActionPreparer
from tests.support.actions import ActionBuilder

INPUTS = {"src/lib/a.c": b"int a;", "src/b.h": b"#pragma once", "top.txt": b"top"}


class CountingStore(ForwardingStore):
    """A real store that counts the blobs read through it (``get_or_none`` reaches
    ``get_many``, so counting there sees every whole-value read)."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.blobs_read: list[Digest] = []

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        digests = list(digests)
        self.blobs_read += digests
        return await self.inner.get_many(digests)


def _preparer(cache_bytes: int = 1 << 20) -> ActionPreparer:
    return ActionPreparer(PlatformMatcher(), 3600.0, InputCache(cache_bytes))


async def test_a_second_action_with_the_same_tree_reads_only_its_action() -> None:
    store = CountingStore(MemoryStore(1 << 20))
    builder = ActionBuilder(store)
    preparer = _preparer()
    first = await builder.build(["cc", "a.c"], inputs=INPUTS, command_platform={"OSFamily": "linux"})
    await preparer.prepare(store, "", first.digest)
    assert set(store.blobs_read) >= {first.command_digest, first.input_root, first.blobs["dir:src/lib"]}
    store.blobs_read.clear()
    second = await builder.build(["cc", "a.c"], inputs=INPUTS, command_platform={"OSFamily": "linux"})
    prepared = await preparer.prepare(store, "", second.digest)
    assert store.blobs_read == [second.digest]
    assert prepared.requirements == PlatformMatcher().requirements([("OSFamily", "linux")])  # from the cached Command


async def test_a_cas_that_lacks_a_remembered_directory_still_gets_missing_blobs() -> None:
    preparer = _preparer()
    full = MemoryStore(1 << 20)
    await preparer.prepare(full, "", (await ActionBuilder(full).build(inputs=INPUTS)).digest)
    other = MemoryStore(1 << 20)  # another instance's CAS: same digests, some blobs absent
    action = await ActionBuilder(other).build(inputs=INPUTS, leave_out=["dir:src/lib", "command", "file:top.txt"])
    with pytest.raises(MissingBlobs) as caught:
        await preparer.prepare(other, "", action.digest)
    assert set(caught.value.digests) >= {action.blobs["dir:src/lib"], action.command_digest, action.blobs["file:top.txt"]}


async def test_a_malformed_directory_is_refused_every_time_and_never_remembered() -> None:
    store = MemoryStore(1 << 20)
    builder = ActionBuilder(store)
    bad = re_pb2.Directory()
    bad.files.add(name="../escape", digest=(await builder.put(b"x")).to_proto())
    root = await builder.put(bad.SerializeToString())
    command = await builder.put(re_pb2.Command(arguments=["true"]).SerializeToString())
    action = await builder.put(re_pb2.Action(command_digest=command.to_proto(), input_root_digest=root.to_proto())
                               .SerializeToString())
    preparer = _preparer()
    for _ in range(2):
        with pytest.raises(InvalidArgument, match="escape"):
            await preparer.prepare(store, "", action)
    assert preparer.cache.directory(root) is None


def test_the_cache_keeps_the_most_recently_used_entries_within_its_bytes() -> None:
    cache = InputCache(max_bytes=3 * (100 + ENTRY_OVERHEAD))
    digests = [Digest.of(bytes([i]) * 100) for i in range(4)]
    for digest in digests[:3]:
        cache.add(digest, CheckedDirectory(b"d" * 100, (), ()))
    assert cache.directory(digests[0]) is not None  # now the most recently used
    cache.add(digests[3], CheckedCommand(b"c" * 100, ()))
    assert len(cache) == 3 and cache.total_bytes <= cache.max_bytes
    assert cache.directory(digests[1]) is None  # the least recently used went
    assert cache.directory(digests[3]) is None and cache.command(digests[3]) is not None  # kinds stay apart
    cache.add(Digest.of(b"huge"), CheckedCommand(b"h" * 10_000, ()))  # larger than the whole cache
    assert cache.command(Digest.of(b"huge")) is None


def test_tree_blobs_walk_from_the_root_within_the_budget() -> None:
    cache = InputCache()
    leaf, mid, root, command = (Digest.of(name.encode()) for name in ("leaf", "mid", "root", "command"))
    cache.add(leaf, CheckedDirectory(b"L" * 10, (), ()))
    cache.add(mid, CheckedDirectory(b"M" * 10, (), (("leaf", leaf),)))
    cache.add(root, CheckedDirectory(b"R" * 10, (), (("mid", mid), ("again", mid))))
    cache.add(command, CheckedCommand(b"C" * 10, ()))
    each = wire_size(root, b"R" * 10)  # all four blobs cost the same here
    assert list(cache.tree_blobs(command, root, 1000)) == [command, root, mid, leaf]
    assert list(cache.tree_blobs(command, root, 2 * each + each // 2)) == [command, root]
    assert cache.tree_blobs(Digest.of(b"unknown"), Digest.of(b"unknown root"), 1000) == {}


def test_tree_blobs_leave_out_what_the_bot_was_sent_before() -> None:
    cache = InputCache()
    leaf, mid, root, other_root, command = (Digest.of(n.encode()) for n in ("leaf", "mid", "root", "root2", "cmd"))
    cache.add(leaf, CheckedDirectory(b"L" * 10, (), ()))
    cache.add(mid, CheckedDirectory(b"M" * 10, (), (("leaf", leaf),)))
    cache.add(root, CheckedDirectory(b"R" * 10, (), (("mid", mid),)))
    cache.add(other_root, CheckedDirectory(b"O" * 10, (), (("mid", mid),)))
    cache.add(command, CheckedCommand(b"C" * 10, ()))
    sent = SentBlobs()
    budget = 2 * wire_size(root, b"R" * 10)
    assert list(cache.tree_blobs(command, root, budget, sent)) == [command, root]  # the budget stops at mid
    assert list(cache.tree_blobs(command, other_root, 1000, sent)) == [other_root, mid, leaf]  # below a sent root too
    assert cache.tree_blobs(command, root, 1000, sent) == {}
    assert len(sent) == 5
    small = SentBlobs(max_entries=2)
    small.add([leaf, mid, root])
    assert not small.has(leaf) and small.has(mid) and small.has(root)  # the oldest is forgotten


def test_what_a_session_was_sent_is_forgotten_least_recently_used_first() -> None:
    a, b, c, d = (Digest.of(n.encode()) for n in "abcd")
    sent = SentBlobs(max_entries=3)
    sent.add([a, b, c])
    assert sent.has(a)  # asked about: now the most recent
    sent.add([d])
    assert not sent.has(b) and [sent.has(x) for x in (a, c, d)] == [True, True, True]
    sent.add([c, a, b])  # sent again: both move up; the one left behind goes
    assert len(sent) == 3 and not sent.has(d) and sent.has(a) and sent.has(b) and sent.has(c)
    assert sent.unsent([d, a, b]) == [d]  # a and b asked about: now the most recent
    sent.add([d])
    assert not sent.has(c) and sent.has(a) and sent.has(b)


async def test_files_sent_are_added_at_the_loops_next_turn_and_seen_by_whoever_asks_first() -> None:
    a, b, c = (Digest.of(n.encode()) for n in "abc")
    sent = SentBlobs()
    sent.add_soon({a: b"a", b: b"b"})  # a lease's files, as lease_inputs passes them
    assert sent._digests == {}  # not while the answer is made
    await asyncio.sleep(0)
    assert list(sent._digests) == [a, b]
    sent.add_soon([c])
    assert sent.unsent([a, c]) == []  # asked before the turn: added first


def test_files_sent_without_an_event_loop_are_added_at_once() -> None:
    a = Digest.of(b"a")
    sent = SentBlobs()
    sent.add_soon([a])
    assert sent._digests == {a: None}
