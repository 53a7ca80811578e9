"""Inline input files (docs/BOTS_PROTOCOL.md section 7, "Input files"): a bot that asks
gets its lease's small input files with the Command and Directories, each once per
session and none its cache summary says it holds, within the budgets both sides set;
a bot that does not ask gets none."""

from __future__ import annotations

import hashlib

from cas.digest import Digest
from server.services.lease_inputs import MAX_INLINE_FILE
from tests.execution.conftest import ExecEnv
from tests.execution.locality_helpers import holding

INPUTS = {"src/lib/a.c": b"int a;", "src/b.h": b"#pragma once", "top.txt": b"top"}
FILES = [f"file:{path}" for path in INPUTS]


def _key(digest: Digest) -> tuple[str, int]:
    return (digest.hash, digest.size_bytes)


async def test_a_bot_that_asks_gets_the_small_input_files_with_its_lease(env: ExecEnv) -> None:
    action = await env.actions.build(["cc", "-c", "a.c"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20, inline_files=256 << 10)
    await bot.create()
    assert bot.files_agreed == 256 << 10
    call = env.start(action)
    [lease] = await bot.poll()
    names = ("command", "root", "dir:src", "dir:src/lib", *FILES)
    assert set(lease.inline_blobs) == {_key(action.blobs[name]) for name in names}
    for name in names:  # each is exactly the blob its digest names
        digest = action.blobs[name]
        assert hashlib.sha256(lease.inline_blobs[_key(digest)]).hexdigest() == digest.hash
    call.cancel()


async def test_a_bot_that_does_not_ask_for_files_gets_only_the_tree(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.files_agreed is None and "reapi-inline-files" not in dict(bot.last_trailing)
    assert lease.inline_blobs and not any(_key(action.blobs[name]) in lease.inline_blobs for name in FILES)
    call.cancel()


async def test_files_without_inline_blobs_are_not_sent(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_files=1 << 20)  # files asked for, inline blobs not: section 7 is off
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.inline_agreed == 0 and bot.files_agreed is None and not lease.inline_blobs
    call.cancel()


async def test_files_stay_within_the_bots_budget(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20, inline_files=150)  # room for about one small file
    await bot.create()
    assert bot.files_agreed == 150
    call = env.start(action)
    [lease] = await bot.poll()
    assert len([name for name in FILES if _key(action.blobs[name]) in lease.inline_blobs]) == 1
    assert _key(action.blobs["dir:src/lib"]) in lease.inline_blobs  # the tree goes first
    call.cancel()


async def test_the_inline_blob_limit_caps_files_too(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(inline_blob_limit=600) as env:
        action = await env.actions.build(["true"], inputs=INPUTS)
        bot = env.bot(inline_limit=1 << 20, inline_files=1 << 20)
        await bot.create()
        assert bot.inline_agreed == 600 and bot.files_agreed == 600
        call = env.start(action)
        [lease] = await bot.poll()
        entries = [v for k, v in bot.last_trailing if k == "reapi-lease-blobs-bin"]
        assert 0 < sum(len(entry) for entry in entries) <= 600  # per answer, serialized
        assert _key(action.blobs["root"]) in lease.inline_blobs
        assert not all(_key(action.blobs[name]) in lease.inline_blobs for name in FILES)  # not everything fitted
        call.cancel()


async def test_large_files_and_files_sent_before_are_not_sent(env: ExecEnv) -> None:
    large = b"x" * (MAX_INLINE_FILE + 1)
    first = await env.actions.build(["cc", "a.c"], inputs={**INPUTS, "big.bin": large})
    second = await env.actions.build(["cc", "b.c"], inputs={**INPUTS, "top.txt": b"changed"})
    bot = env.bot(inline_limit=1 << 20, inline_files=1 << 20)
    await bot.create()
    calls = [env.start(first)]
    [lease] = await bot.poll()
    assert _key(first.blobs["file:big.bin"]) not in lease.inline_blobs  # the bot reads it as before
    assert all(_key(first.blobs[name]) in lease.inline_blobs for name in FILES)
    bot.complete(lease.id)
    calls.append(env.start(second))
    [lease] = await bot.poll()
    files = {_key(second.blobs[name]) for name in FILES} & set(lease.inline_blobs)
    assert files == {_key(second.blobs["file:top.txt"])}  # only the changed file is new to this bot
    for call in calls:
        call.cancel()


async def test_an_ask_for_files_that_is_not_a_byte_count_gets_none(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    bot.inline_files = -5  # read on every call: a bad one only means no files
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.files_agreed == 0
    assert lease.inline_blobs and not any(_key(action.blobs[name]) in lease.inline_blobs for name in FILES)
    call.cancel()


async def test_files_the_bots_cache_summary_holds_are_not_sent(make_env) -> None:  # type: ignore[no-untyped-def]
    """Only what the bot's filter (section 8) says it holds is left out: an unrelated
    summary leaves every file in; one holding a file leaves out that file alone."""
    async with make_env(dispatch="locality") as env:
        action = await env.actions.build(["cc", "-c", "a.c"], inputs=INPUTS)
        unrelated = Digest.of(b"a file of some other action")
        bot = env.bot(inline_limit=1 << 20, inline_files=1 << 20, summary_size=8 << 10, cache=holding([unrelated]))
        await bot.create()
        assert bot.summary_agreed == 8 << 10
        call = env.start(action)
        [lease] = await bot.poll()
        assert all(_key(action.blobs[name]) in lease.inline_blobs for name in FILES)
        bot.complete(lease.id)
        call.cancel()

        again = await env.actions.build(["cc", "-c", "b.c"], inputs={**INPUTS, "top.txt": b"new", "d.txt": b"d"})
        held = again.blobs["file:top.txt"]
        other = env.bot(inline_limit=1 << 20, inline_files=1 << 20, summary_size=8 << 10, cache=holding([held]))
        await other.create()
        call = env.start(again)
        [lease] = await other.poll()
        assert _key(held) not in lease.inline_blobs  # the bot said it holds it: it reads it if it does not
        assert _key(again.blobs["file:d.txt"]) in lease.inline_blobs
        assert all(_key(again.blobs[f"file:{path}"]) in lease.inline_blobs for path in INPUTS if path != "top.txt")
        call.cancel()
