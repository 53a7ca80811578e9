"""Inline input files as one run per lease (docs/BOTS_PROTOCOL.md section 7, "Input
files in one run"): a bot that asks with ``reapi-inline-files-form`` = run gets the
same files as before, in a ``reapi-lease-files-bin`` entry of their own (the Command and
Directories stay in ``reapi-lease-blobs-bin``), within the same budgets; a bot that
does not ask gets them as before, and no such entry."""

from __future__ import annotations

import pytest

from cas.blob_run import decode_run
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from server.services import lease_inputs
from tests.execution.conftest import ExecEnv
from tests.support.test_bot import TestBot

INPUTS = {"src/lib/a.c": b"int a;", "src/b.h": b"#pragma once", "top.txt": b"top"}
FILES = [f"file:{path}" for path in INPUTS]
SHA256 = re_pb2.DigestFunction.SHA256
# Room for the Command and Directories of INPUTS' action (about 800 bytes as the server
# counts them, ~700 serialized) and some of the files, not all (each costs its size, 4
# bytes and its hash in a run).
LIMIT = 1000


class RunBot(TestBot):
    """A TestBot that also asks for its inline files as one run."""

    __test__ = False

    def _session(self) -> bots_pb2.BotSession:
        session = super()._session()
        session.worker.configs.add(key="reapi-inline-files-form", value="run")
        return session

    def runs(self) -> list[bytes]:
        return [v for k, v in self.last_trailing if k == "reapi-lease-files-bin"]  # type: ignore[misc]


def _bot(env: ExecEnv, **kwargs: object) -> RunBot:
    return RunBot(env.channel, bot_id="run-bot", **kwargs)  # type: ignore[arg-type]


async def test_a_bot_that_asks_gets_its_files_as_one_run(env: ExecEnv) -> None:
    action = await env.actions.build(["cc", "-c", "a.c"], inputs=INPUTS)
    bot = _bot(env, inline_limit=1 << 20, inline_files=256 << 10)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert dict(bot.last_trailing)["reapi-inline-files-form"] == "run"
    [run] = bot.runs()
    assert decode_run(run, SHA256) == {action.blobs[f"file:{path}"]: data for path, data in INPUTS.items()}
    tree = {(action.blobs[name].hash, action.blobs[name].size_bytes) for name in ("command", "root", "dir:src", "dir:src/lib")}
    assert set(lease.inline_blobs) == tree  # the files are not sent twice
    call.cancel()


async def test_files_sent_once_are_not_in_the_next_run(env: ExecEnv) -> None:
    first = await env.actions.build(["cc", "a.c"], inputs=INPUTS)
    second = await env.actions.build(["cc", "b.c"], inputs={**INPUTS, "top.txt": b"changed"})
    bot = _bot(env, inline_limit=1 << 20, inline_files=1 << 20)
    await bot.create()
    calls = [env.start(first)]
    [lease] = await bot.poll()
    assert len(decode_run(bot.runs()[0], SHA256)) == len(FILES)
    bot.complete(lease.id)
    calls.append(env.start(second))
    [lease] = await bot.poll()
    [run] = bot.runs()
    assert set(decode_run(run, SHA256)) == {second.blobs["file:top.txt"]}
    for call in calls:
        call.cancel()


async def test_a_run_stays_within_the_answers_budget(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(inline_blob_limit=LIMIT) as env:
        action = await env.actions.build(["true"], inputs=INPUTS)
        bot = _bot(env, inline_limit=1 << 20, inline_files=1 << 20)
        await bot.create()
        call = env.start(action)
        [lease] = await bot.poll()
        entries = [v for k, v in bot.last_trailing if k in ("reapi-lease-blobs-bin", "reapi-lease-files-bin")]
        assert 0 < sum(map(len, entries)) <= LIMIT  # per answer, both entries together
        files = decode_run(bot.runs()[0], SHA256)
        assert 0 < len(files) < len(FILES)  # the tree went first; the run took what was left
        call.cancel()


async def test_a_lease_with_no_files_to_send_has_an_empty_run(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs={"big.bin": b"x" * (65 << 10)})
    bot = _bot(env, inline_limit=1 << 20, inline_files=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.runs() == [b""]  # one entry per lease, in lease order
    call.cancel()


async def test_a_bot_that_does_not_ask_gets_no_run(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20, inline_files=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert "reapi-inline-files-form" not in dict(bot.last_trailing)
    assert not [k for k, _ in bot.last_trailing if k == "reapi-lease-files-bin"]
    assert all((action.blobs[name].hash, action.blobs[name].size_bytes) in lease.inline_blobs for name in FILES)
    call.cancel()


async def test_files_that_cannot_make_a_run_go_in_the_message_form(env: ExecEnv,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_run refuses (hashes of mixed lengths, a file of 4 GiB or more: it is made
    to refuse here, as no inlined file can be either): the lease's files still go, in
    reapi-lease-blobs-bin, which a bot that asked for runs reads too."""
    monkeypatch.setattr(lease_inputs, "encode_run", lambda hashes, contents: None)
    action = await env.actions.build(["cc", "-c", "a.c"], inputs=INPUTS)
    bot = _bot(env, inline_limit=1 << 20, inline_files=256 << 10)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.runs() == [b""]
    assert all((action.blobs[name].hash, action.blobs[name].size_bytes) in lease.inline_blobs for name in FILES)
    call.cancel()
