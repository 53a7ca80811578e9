"""Execute and WaitExecution over real gRPC, with test bots: cache, validation,
dedup, priorities, stages, progress, reattaching."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cas.ac.action_cache import ActionCache
from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from server.boundary import STATUS_DETAILS_KEY
from tests.execution.conftest import ExecEnv, drain, metadata_of, next_with_stage, response_of, stages_of

CACHE_CHECK, QUEUED, EXECUTING, COMPLETED = 1, 2, 3, 4


def status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status details in the trailers")


def missing_subjects(err: grpc.aio.AioRpcError) -> set[str]:
    subjects = set()
    for detail in status_details(err).details:
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            for violation in failure.violations:
                assert violation.type == "MISSING"
                subjects.add(violation.subject)
    return subjects


def subject(digest: Digest) -> str:
    return f"blobs/{digest.hash}/{digest.size_bytes}"


async def test_action_runs_on_a_bot_and_streams_every_stage(env: ExecEnv) -> None:
    action = await env.actions.build(["echo", "hi"], inputs={"src/a.txt": b"a", "b.txt": b"b"})
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    first = await call.read()
    assert metadata_of(first).stage == CACHE_CHECK and not first.done
    assert first.name.startswith("operations/")
    [lease] = await bot.poll()
    assert lease.action == action.action
    assert lease.metadata.action_digest == action.digest.to_proto()
    assert lease.metadata.digest_function == re_pb2.DigestFunction.SHA256
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"hi\n"))
    await bot.quick_poll()
    rest = await drain(call)
    assert stages_of([first, *rest]) == [CACHE_CHECK, QUEUED, EXECUTING, COMPLETED]
    assert {op.name for op in rest} == {first.name}
    assert [op.done for op in rest] == [False, False, True]
    response = response_of(rest[-1])
    assert response.status.code == code_pb2.OK and not response.cached_result
    assert response.result.stdout_raw == b"hi\n"
    meta = response.result.execution_metadata
    assert meta.worker == bot.bot_id
    assert meta.queued_timestamp.seconds == int(env.clock.now())
    assert meta.HasField("worker_start_timestamp") and meta.HasField("worker_completed_timestamp")


async def test_complete_cache_hit_answers_at_once_without_a_worker(env: ExecEnv) -> None:
    action = await env.actions.build()
    instance = env.server.instances.get("")
    stdout = await env.actions.put(b"cached output")
    await ActionCache(instance.ac, instance.cas).put(
        action.digest, re_pb2.ActionResult(exit_code=0, stdout_digest=stdout.to_proto())
    )
    operations = await env.run(action)
    assert stages_of(operations) == [CACHE_CHECK, COMPLETED]
    response = response_of(operations[-1])
    assert response.cached_result and response.result.stdout_digest == stdout.to_proto()
    assert await env.queued() == 0 and await env.operation_count() == 0


async def test_incomplete_cache_entry_is_a_miss_and_skip_cache_lookup_overwrites(env: ExecEnv) -> None:
    action = await env.actions.build()
    instance = env.server.instances.get("")
    gone = Digest.of(b"evicted output")  # never uploaded
    stale = re_pb2.ActionResult(exit_code=0, stdout_digest=gone.to_proto())
    await instance.ac.put_bytes(action.digest, stale.SerializeToString())
    bot = env.bot()
    await bot.create()
    for request in ({}, {"skip_cache_lookup": True}):
        call = env.start(action, **request)
        [lease] = await bot.poll()
        bot.complete(lease.id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"fresh"))
        await bot.quick_poll()
        response = response_of((await drain(call))[-1])
        assert not response.cached_result
    cached = await ActionCache(instance.ac, instance.cas).get(action.digest, inline_stdout=True)
    assert cached is not None and cached.stdout_raw == b"fresh"


async def test_failures_and_do_not_cache_are_not_cached(env: ExecEnv) -> None:
    instance = env.server.instances.get("")
    failing = await env.actions.build(["false"])
    uncacheable = await env.actions.build(do_not_cache=True)
    bot = env.bot()
    await bot.create()
    for action, exit_code in ((failing, 1), (uncacheable, 0)):
        call = env.start(action)
        [lease] = await bot.poll()
        bot.complete(lease.id, re_pb2.ActionResult(exit_code=exit_code))
        await bot.quick_poll()
        assert response_of((await drain(call))[-1]).result.exit_code == exit_code
        assert await instance.ac.get_or_none(action.digest) is None


async def test_missing_inputs_are_failed_precondition_listing_every_blob(env: ExecEnv) -> None:
    action = await env.actions.build(
        inputs={"a.txt": b"a", "lib/b.txt": b"b", "lib/deep/c.txt": b"c", "d.txt": b"d"},
        leave_out=["command", "file:a.txt", "file:lib/b.txt", "dir:lib/deep"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.run(action)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    expected = {subject(action.blobs[k]) for k in ("command", "file:a.txt", "file:lib/b.txt", "dir:lib/deep")}
    assert missing_subjects(caught.value) == expected
    assert "4 missing" in caught.value.details()
    assert await env.queued() == 0


async def test_missing_action_is_one_violation(env: ExecEnv) -> None:
    action = await env.actions.build(leave_out=["action"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.run(action)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert missing_subjects(caught.value) == {subject(action.digest)}


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["b", "a"], "comes after 'b'"),
        (["a", "a"], "is listed twice"),
        (["x/y"], "'x/y'"),
        ([".."], "'..'"),
        (["."], "'.'"),
        ([""], "named ''"),
    ],
)
async def test_malformed_directories_are_invalid_argument_naming_the_entry(
    env: ExecEnv, names: list[str], fragment: str
) -> None:
    empty = await env.actions.put(b"")
    inner = re_pb2.Directory(files=[re_pb2.FileNode(name=n, digest=empty.to_proto()) for n in names])
    inner_digest = await env.actions.put(inner.SerializeToString())
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="pkg", digest=inner_digest.to_proto())])
    root_digest = await env.actions.put(root.SerializeToString())
    command = await env.actions.put(re_pb2.Command(arguments=["true"]).SerializeToString())
    action = re_pb2.Action(command_digest=command.to_proto(), input_root_digest=root_digest.to_proto())
    action_digest = await env.actions.put(action.SerializeToString())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in env.execution.Execute(re_pb2.ExecuteRequest(action_digest=action_digest.to_proto())):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pkg'" in caught.value.details() and fragment in caught.value.details()


async def test_bad_digest_in_tree_and_file_dir_clash_are_invalid_argument(env: ExecEnv) -> None:
    empty = await env.actions.put(b"")
    bad = re_pb2.Directory(files=[re_pb2.FileNode(name="f", digest=re_pb2.Digest(hash="nothex", size_bytes=1))])
    clash = re_pb2.Directory(
        files=[re_pb2.FileNode(name="x", digest=empty.to_proto())],
        directories=[re_pb2.DirectoryNode(name="x", digest=(await env.actions.put(b"")).to_proto())],
    )
    command = await env.actions.put(re_pb2.Command(arguments=["true"]).SerializeToString())
    for root, fragment in ((bad, "file 'f'"), (clash, "both a file and a directory named 'x'")):
        root_digest = await env.actions.put(root.SerializeToString())
        action = re_pb2.Action(command_digest=command.to_proto(), input_root_digest=root_digest.to_proto())
        digest = await env.actions.put(action.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in env.execution.Execute(re_pb2.ExecuteRequest(action_digest=digest.to_proto())):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in caught.value.details()


async def test_timeout_above_the_maximum_is_invalid_argument(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(max_action_timeout="1h") as env:
        ok = await env.actions.build(timeout=3600)
        too_long = await env.actions.build(timeout=3601)
        call = env.start(ok)
        await next_with_stage(call, QUEUED)
        call.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.run(too_long)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "3601s is above this server's maximum of 3600s" in caught.value.details()


async def test_bad_action_digest_is_invalid_argument(env: ExecEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in env.execution.Execute(re_pb2.ExecuteRequest(action_digest=re_pb2.Digest(hash="abc", size_bytes=3))):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "action_digest" in caught.value.details()


async def test_identical_executes_share_one_lease(env: ExecEnv) -> None:
    action = await env.actions.build()
    first, second = env.start(action), env.start(action)
    await next_with_stage(first, QUEUED)
    await next_with_stage(second, QUEUED)
    bot = env.bot(capacity=4)
    leases = await bot.create()
    assert len(leases) == 1
    bot.complete(leases[0].id, re_pb2.ActionResult(exit_code=0, stdout_raw=b"once"))
    await bot.quick_poll()
    done = [(await drain(call))[-1] for call in (first, second)]
    assert done[0].name != done[1].name
    assert [response_of(op).result.stdout_raw for op in done] == [b"once", b"once"]
    assert bot.seen == [leases[0].id]


async def test_do_not_cache_actions_are_not_deduplicated(env: ExecEnv) -> None:
    action = await env.actions.build(do_not_cache=True)
    calls = [env.start(action), env.start(action)]
    for call in calls:
        await next_with_stage(call, QUEUED)
    bot = env.bot(capacity=4)
    assert len(await bot.create()) == 2


async def test_lower_priority_value_runs_first_then_arrival_order(env: ExecEnv) -> None:
    built = {}
    calls = []
    for label, priority in (("p5", 5), ("p0-first", 0), ("p-1", -1), ("p0-second", 0), ("p-1-late", -1)):
        built[label] = action = await env.actions.build([label])
        call = env.start(action, execution_policy=re_pb2.ExecutionPolicy(priority=priority))
        await next_with_stage(call, QUEUED)
        calls.append(call)
    by_digest = {a.digest.to_proto().SerializeToString(): label for label, a in built.items()}
    bot = env.bot()
    order = []
    leases = await bot.create()
    while leases:
        [lease] = leases
        order.append(by_digest[lease.action_digest.SerializeToString()])
        bot.complete(lease.id)
        leases = await bot.quick_poll()
    assert order == ["p-1", "p-1-late", "p0-first", "p0-second", "p5"]


async def test_a_higher_priority_duplicate_moves_the_queued_action_up(env: ExecEnv) -> None:
    low = await env.actions.build(["low"])
    other = await env.actions.build(["other"])
    calls = [env.start(low, execution_policy=re_pb2.ExecutionPolicy(priority=10)),
             env.start(other, execution_policy=re_pb2.ExecutionPolicy(priority=5))]
    for call in calls:
        await next_with_stage(call, QUEUED)
    boost = env.start(low, execution_policy=re_pb2.ExecutionPolicy(priority=1))
    await next_with_stage(boost, QUEUED)
    [lease] = await env.bot().create()
    assert lease.action_digest == low.digest.to_proto()


async def test_progress_is_repeated_while_nothing_changes(make_env) -> None:  # type: ignore[no-untyped-def]
    async with make_env(progress_interval=0.1) as env:
        action = await env.actions.build()
        call = env.start(action)
        seen = [await call.read() for _ in range(5)]
        assert stages_of(seen) == [CACHE_CHECK, QUEUED, QUEUED, QUEUED, QUEUED]
        assert len({op.name for op in seen}) == 1
        call.cancel()


async def test_wait_execution_reattaches_after_the_execute_stream_dropped(env: ExecEnv) -> None:
    action = await env.actions.build()
    call = env.start(action)
    name = (await next_with_stage(call, QUEUED)).name
    call.cancel()  # the client goes away: the work must go on
    await asyncio.sleep(0.05)
    bot = env.bot()
    [lease] = await bot.create()
    waiting = env.execution.WaitExecution(re_pb2.WaitExecutionRequest(name=name))
    executing = await waiting.read()
    assert executing.name == name and metadata_of(executing).stage == EXECUTING
    bot.complete(lease.id, re_pb2.ActionResult(exit_code=3))
    await bot.quick_poll()
    rest = await drain(waiting)
    assert response_of(rest[-1]).result.exit_code == 3
    # Finished operations stay reachable for a while, then are forgotten.
    again = [op async for op in env.execution.WaitExecution(re_pb2.WaitExecutionRequest(name=name))]
    assert len(again) == 1 and response_of(again[0]).result.exit_code == 3
    await env.expire(601)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in env.execution.WaitExecution(re_pb2.WaitExecutionRequest(name=name)):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_wait_execution_of_an_unknown_name_is_not_found(env: ExecEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in env.execution.WaitExecution(re_pb2.WaitExecutionRequest(name="operations/nope")):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "operations/nope" in caught.value.details()


async def test_operation_error_is_never_set_even_for_failures(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    bot.complete(lease.id, status=status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="timed out"))
    await bot.quick_poll()
    last: lro_pb2.Operation = (await drain(call))[-1]
    assert not last.HasField("error")
    assert response_of(last).status.code == code_pb2.DEADLINE_EXCEEDED


async def test_instance_names_reach_the_bot(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot(instance_name="")
    await bot.create()
    call = env.start(action, instance_name="team/a")
    first = await call.read()
    assert first.name.startswith("team/a/operations/")
    [lease] = await bot.poll()
    assert lease.instance_name == "team/a"
    call.cancel()


async def test_a_refused_action_never_names_an_operation(env: ExecEnv) -> None:
    """Issue 12: validation comes before the first Operation, so a client never holds a
    name that GetOperation does not know."""
    action = await env.actions.build(["echo", "hi"], inputs={"a.txt": b"a"}, leave_out=["file:a.txt"])
    call = env.start(action)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for operation in call:
            received.append(operation)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert received == [], "an operation was named before the action was refused"
