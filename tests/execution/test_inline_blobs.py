"""Inline blobs (docs/BOTS_PROTOCOL.md section 7): leases carry their Command and input
Directories to bots that ask, and such bots may report small outputs inside the result."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from google.rpc import code_pb2, status_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2, worker_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from server.scheduler.input_cache import DEFAULT_MAX_BYTES
from tests.execution.conftest import ExecEnv, drain, next_with_stage, response_of

QUEUED = 2
INPUTS = {"src/lib/a.c": b"int a;", "src/b.h": b"#pragma once", "top.txt": b"top"}


def _key(digest: Digest) -> tuple[str, int]:
    return (digest.hash, digest.size_bytes)


async def test_a_bot_that_asks_gets_the_command_and_every_directory_with_its_lease(env: ExecEnv) -> None:
    action = await env.actions.build(["cc", "-c", "a.c"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    assert bot.inline_agreed == 1 << 20  # the server's default cap is 1 MiB too
    call = env.start(action)
    [lease] = await bot.poll()
    expected = {name: action.blobs[name] for name in ("command", "root", "dir:src", "dir:src/lib")}
    assert set(lease.inline_blobs) == {_key(d) for d in expected.values()}
    for digest in expected.values():  # each is exactly the blob its digest names
        assert hashlib.sha256(lease.inline_blobs[_key(digest)]).hexdigest() == digest.hash
    assert not any(_key(action.blobs[f"file:{path}"]) in lease.inline_blobs for path in INPUTS)  # files are not sent
    call.cancel()


async def test_inline_blobs_stay_within_the_limit_both_sides_set(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(inline_blob_limit=400) as env:
        actions = [await env.actions.build(["true", str(n)], inputs=INPUTS) for n in range(2)]
        bot = env.bot(inline_limit=1 << 20, capacity=2)
        await bot.create()
        assert bot.inline_agreed == 400  # the server's cap wins
        calls = [env.start(action) for action in actions]
        for call in calls:
            await next_with_stage(call, QUEUED)
        leases = await bot.poll()
        assert len(leases) == 2  # one answer, two new leases
        entries = [v for k, v in bot.last_trailing if k == "reapi-lease-blobs-bin"]
        assert 0 < sum(len(entry) for entry in entries) <= 400  # the budget is per answer, serialized
        assert sum(len(lease.inline_blobs) for lease in leases) < 2 * 5  # so not everything fitted
        for call in calls:
            call.cancel()
    async with make_env() as env:
        bot = env.bot(inline_limit=10)
        await bot.create()
        assert bot.inline_agreed == 10  # the bot's ask wins


async def test_a_bot_that_does_not_ask_gets_no_inline_blobs(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert bot.inline_agreed == 0 and not lease.inline_blobs
    assert not [k for k, _ in bot.last_trailing if k.startswith("reapi-inline") or k.startswith("reapi-lease-blobs")]
    call.cancel()


async def test_a_lease_the_bot_listed_is_not_sent_again(env: ExecEnv) -> None:
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    assert lease.inline_blobs
    await bot.quick_poll()  # lists the lease as ACTIVE; under 1 s left, so answered at once
    assert [v for k, v in bot.last_trailing if k == "reapi-lease-blobs-bin"] == [b""]
    call.cancel()


async def test_inline_blobs_come_from_the_checked_inputs_the_server_keeps(env: ExecEnv) -> None:
    assert env.server.execution is not None
    assert env.server.execution.inputs.max_bytes == DEFAULT_MAX_BYTES
    action = await env.actions.build(["true"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    call = env.start(action)
    await bot.poll()
    assert env.server.execution.inputs.directory(action.input_root) is not None
    assert env.server.execution.inputs.command(action.command_digest) is not None
    call.cancel()


def _output(env: ExecEnv, path: str, data: bytes, contents: bytes | None = None) -> re_pb2.OutputFile:
    return re_pb2.OutputFile(path=path, digest=env.actions.digest(data).to_proto(),
                             contents=data if contents is None else contents)


async def test_outputs_reported_inline_are_stored_and_the_client_gets_digests(env: ExecEnv) -> None:
    action = await env.actions.build(["cc"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    result = re_pb2.ActionResult(exit_code=0, output_files=[_output(env, "a.o", b"object code")],
                                 stdout_raw=b"compiled\n")
    bot.complete(lease.id, result)
    await bot.quick_poll()
    response = response_of((await drain(call))[-1])
    assert response.status.code == code_pb2.OK
    [out] = response.result.output_files
    assert out.path == "a.o" and not out.contents and out.digest == env.actions.digest(b"object code").to_proto()
    assert not response.result.stdout_raw
    assert response.result.stdout_digest == env.actions.digest(b"compiled\n").to_proto()
    cas = env.server.instances.get("").cas
    assert await cas.get_bytes(env.actions.digest(b"object code")) == b"object code"
    assert await cas.get_bytes(env.actions.digest(b"compiled\n")) == b"compiled\n"
    cached = await env.server.execution.results.lookup("", action.digest)  # type: ignore[union-attr]
    assert cached is not None and not cached.output_files[0].contents and not cached.stdout_raw


async def test_an_inline_output_that_does_not_match_its_digest_sends_the_action_to_another_try(
    env: ExecEnv,
) -> None:
    action = await env.actions.build(["cc"], inputs=INPUTS)
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    wrong = _output(env, "a.o", b"object code", contents=b"OBJECT CODE")  # same size, other bytes
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, output_files=[wrong]), status_pb2.Status())
    [retry] = await bot.quick_poll()  # requeued, and this bot is free again
    assert retry.id != lease.id and retry.metadata.action_digest == action.digest.to_proto()
    cas = env.server.instances.get("").cas
    assert not await cas.has(env.actions.digest(b"object code"))
    call.cancel()


async def test_an_ask_that_is_not_a_byte_count_is_invalid_argument(env: ExecEnv) -> None:
    stub = bots_grpc.BotsStub(env.channel)
    worker = worker_pb2.Worker(configs=[worker_pb2.Worker.Config(key="reapi-inline-blobs", value="lots")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateBotSession(bots_pb2.CreateBotSessionRequest(
            bot_session=bots_pb2.BotSession(bot_id="b", worker=worker)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reapi-inline-blobs='lots'" in (caught.value.details() or "")


async def test_directories_a_bot_was_sent_once_are_not_sent_again(env: ExecEnv) -> None:
    first = await env.actions.build(["cc", "a.c"], inputs=INPUTS)
    second = await env.actions.build(["cc", "b.c"], inputs={**INPUTS, "top.txt": b"changed"})
    bot = env.bot(inline_limit=1 << 20)
    await bot.create()
    calls = [env.start(first)]
    [lease] = await bot.poll()
    bot.complete(lease.id)
    calls.append(env.start(second))
    [lease] = await bot.poll()
    shared = {first.blobs[name] for name in ("dir:src", "dir:src/lib")}
    assert shared == {second.blobs["dir:src"], second.blobs["dir:src/lib"]}
    assert set(lease.inline_blobs) == {_key(second.input_root), _key(second.command_digest)}  # only what is new
    newcomer = env.bot(inline_limit=1 << 20)  # another session has had nothing yet
    await newcomer.create()
    calls.append(env.start(await env.actions.build(["cc", "b.c"], inputs={**INPUTS, "top.txt": b"changed"})))
    [fresh] = await newcomer.poll()
    assert {_key(d) for d in shared} <= set(fresh.inline_blobs)
    for call in calls:
        call.cancel()
