"""A real worker against a real server: results, failures as statuses, safety, live logs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from cas.digest import Digest
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re_pb2,
)
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from server.app import ReapiServer
from tests.support.processes import pid_alive, wait_gone
from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient, metadata_of, response_of
from tests.worker.conftest import execution_config, worker_in_process
from tests.worker.trees import Exe, Link, Node
from worker.app import Worker
from worker.sandbox.sandbox import SandboxMode

OK = grpc.StatusCode.OK.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
# Tests that watch an action from outside (a pid file it writes) run it where it can
# write there and has the worker's pid numbering: the process fallback, as root.
OBSERVABLE: dict[str, Any] = {"sandbox": SandboxMode.PROCESS, "run_as": "root"}


async def test_an_action_runs_with_its_inputs_and_returns_outputs(client: ActionClient, worker: Worker) -> None:
    response = await client.run(
        ["sh", "-c", "tr a-z A-Z < src/in.txt > out/upper.txt; mkdir out/dir; ./tool.sh > out/dir/tool.out; "
                     "ln -s upper.txt out/link; echo to-stdout; echo to-stderr >&2"],
        {"src": {"in.txt": b"hello"}, "tool.sh": Exe(b"#!/bin/sh\necho tool ran\n")},
        output_files=["out/upper.txt", "out/link", "out/missing"], output_directories=["out/dir"],
    )
    assert response.status.code == OK, response.status
    result = response.result
    assert result.exit_code == 0
    assert [f.path for f in result.output_files] == ["out/upper.txt"]
    assert await client.blob(result.output_files[0].digest) == b"HELLO"
    assert [(s.path, s.target) for s in result.output_file_symlinks] == [("out/link", "upper.txt")]
    tree = re_pb2.Tree()
    tree.ParseFromString(await client.blob(result.output_directories[0].tree_digest))
    assert [f.name for f in tree.root.files] == ["tool.out"]
    assert await client.blob(tree.root.files[0].digest) == b"tool ran\n"
    assert await client.blob(result.stdout_digest) == b"to-stdout\n"
    assert await client.blob(result.stderr_digest) == b"to-stderr\n"
    meta = result.execution_metadata
    assert meta.worker == worker.daemon.settings.bot_id
    stamps = [meta.worker_start_timestamp, meta.input_fetch_start_timestamp, meta.input_fetch_completed_timestamp,
              meta.execution_start_timestamp, meta.execution_completed_timestamp,
              meta.output_upload_start_timestamp, meta.output_upload_completed_timestamp,
              meta.worker_completed_timestamp]
    nanos = [s.ToNanoseconds() for s in stamps]
    assert nanos == sorted(nanos) and nanos[0] > 0
    usage = struct_pb2.Struct()
    assert meta.auxiliary_metadata[0].Unpack(usage)
    assert usage.fields["max_rss_bytes"].number_value > 0 and "user_cpu_seconds" in usage


async def test_a_failing_command_is_a_result_not_an_error(client: ActionClient, worker: Worker) -> None:
    response = await client.run(["sh", "-c", "echo failing >&2; exit 7"])
    assert response.status.code == OK
    assert response.result.exit_code == 7
    assert await client.blob(response.result.stderr_digest) == b"failing\n"


async def test_environment_is_exactly_the_commands_with_a_default_path(client: ActionClient, worker: Worker) -> None:
    response = await client.run(["sh", "-c", "env"], env={"ONLY": "this"})
    lines = set((await client.blob(response.result.stdout_digest)).decode().splitlines())
    assert "ONLY=this" in lines
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in lines
    assert not any(line.startswith(("HOME=", "REAPI_", "PYTHON")) for line in lines)


async def test_working_directory_and_output_parents(client: ActionClient, worker: Worker) -> None:
    response = await client.run(["sh", "-c", "pwd > ../gen/deep/where.txt"], {"pkg": {"BUILD": b""}},
                                working_directory="pkg", outputs=["../gen/deep/where.txt"])
    assert response.status.code == OK, response.status
    [out] = response.result.output_files
    assert out.path == "../gen/deep/where.txt"
    assert (await client.blob(out.digest)).decode().strip().endswith("/root/pkg")


async def test_timeout_is_deadline_exceeded_with_partial_output(client: ActionClient, worker: Worker) -> None:
    started = time.monotonic()
    response = await client.run(["sh", "-c", "echo before; sleep 30; echo after"], timeout=0.5)
    assert time.monotonic() - started < 15
    assert response.status.code == DEADLINE_EXCEEDED, response.status
    assert "timed out" in response.status.message
    assert await client.blob(response.result.stdout_digest) == b"before\n"


async def test_missing_inputs_are_failed_precondition_naming_each_blob(
    client: ActionClient, worker: Worker, exec_server: ReapiServer
) -> None:
    digest = await client.action(["cat", "a"], {"a": b"will vanish"})
    missing = Digest.of(b"will vanish")
    memory = exec_server.stores["cas-memory"]
    assert isinstance(memory, MemoryStore) and await memory.has(missing)
    memory._values.pop(missing)  # lost behind the client's back
    try:
        response = await client.execute(digest)
        status = response.status
    except grpc.aio.AioRpcError as exc:  # refused by the server's own check, before any worker
        status = status_pb2.Status()
        status.ParseFromString(dict(exc.trailing_metadata())["grpc-status-details-bin"])  # type: ignore[arg-type]
    assert status.code == FAILED_PRECONDITION, status
    failure = error_details_pb2.PreconditionFailure()
    assert any(d.Unpack(failure) for d in status.details)
    assert [(v.type, v.subject) for v in failure.violations] == [("MISSING", f"blobs/{missing.hash}/{missing.size_bytes}")]


async def test_unsafe_trees_and_outputs_are_refused_and_touch_nothing(client: ActionClient, worker: Worker, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"untouched")
    touch = ["sh", "-c", f"touch {outside}/touched; echo x > escape/keep; echo x > ../x"]
    cases: dict[str, dict[str, Any]] = {
        "dotdot name": dict(inputs={"..": {"f": b"x"}}),
        "escaping symlink": dict(inputs={"sub": {"escape": Link("../..")}}),
        "symlinks escaping together": dict(inputs={"dot": Link("."), "escape": Link("dot/..")}),
        "absolute symlink": dict(inputs={"escape": Link(str(outside))}),
        "output outside": dict(outputs=["../escaped"]),
        "output through symlink": dict(inputs={"escape": Link("..")}, outputs=["escape/x"]),
    }
    for label, kw in cases.items():
        digest = await client.action(touch, kw.get("inputs"), outputs=kw.get("outputs", ()))  # type: ignore[arg-type]
        try:
            response = await client.execute(digest)
            code, message = response.status.code, response.status.message
        except grpc.aio.AioRpcError as exc:  # the server may refuse it before any worker sees it
            code, message = exc.code().value[0], exc.details()
        assert code == INVALID_ARGUMENT, f"{label}: {code} {message}"
        assert message, label
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_bytes() == b"untouched"
    assert not (tmp_path / "escaped").exists()


async def test_cancelling_the_operation_kills_the_action(client: ActionClient, exec_server: ReapiServer,
                                                        tmp_path: Path) -> None:
    async with worker_in_process(exec_server, tmp_path / "worker", **OBSERVABLE) as worker:
        await cancelling_kills(client, worker, tmp_path)


async def cancelling_kills(client: ActionClient, worker: Worker, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    digest = await client.action(["sh", "-c", f"echo $$ > {marker}; sleep 60"], salt=b"cancel")
    stream = client.stream(digest)
    first = await stream.read()
    while not marker.exists() or not marker.read_text().strip():
        await asyncio.sleep(0.05)
    pid = int(marker.read_text())
    await client.operations.CancelOperation(lro_pb2.CancelOperationRequest(name=first.name))
    assert await wait_gone(pid)
    assert not pid_alive(pid)
    stream.cancel()
    # The worker is free again: the next action runs at once.
    response = await client.run(["true"])
    assert response.status.code == OK and worker.metrics.outcomes["CANCELLED"] == 1


async def test_stdout_streams_live_while_the_action_runs(client: ActionClient, worker: Worker) -> None:
    """Acceptance 2: a line every 100 ms for 3 s, read through ByteStream as it is written."""
    digest = await client.action(["sh", "-c", "for i in $(seq 1 30); do echo line $i; sleep 0.1; done"])
    bytestream = bs_grpc.ByteStreamStub(client.channel)
    arrivals: list[tuple[float, bytes]] = []
    reader: asyncio.Task[None] | None = None

    async def read(name: str) -> None:
        async for chunk in bytestream.Read(bs_pb2.ReadRequest(resource_name=name)):
            arrivals.append((time.monotonic(), chunk.data))

    finished_at = 0.0
    final = None
    async for operation in client.stream(digest):
        meta = metadata_of(operation)
        if reader is None and meta.stdout_stream_name:
            reader = asyncio.create_task(read(meta.stdout_stream_name))
        if operation.done:
            finished_at = time.monotonic()
            final = response_of(operation)
    assert reader is not None, "the server never named a stdout stream"
    await asyncio.wait_for(reader, 60)
    early = [data for at, data in arrivals if at < finished_at - 1.0]
    assert len(b"".join(early).splitlines()) >= 5, arrivals  # lines arrived well before the end
    assert final is not None
    streamed = b"".join(data for _, data in arrivals)
    assert streamed == await client.blob(final.result.stdout_digest)
    assert streamed.splitlines()[-1] == b"line 30"


async def test_blake3_actions_use_blake3_throughout(exec_server: ReapiServer, worker: Worker) -> None:
    async with channel_to(exec_server) as channel:
        client = ActionClient(channel, function=re_pb2.DigestFunction.BLAKE3)
        response = await client.run(["sh", "-c", "cat in > out"], {"in": b"blake3 input"}, outputs=["out"])
        assert response.status.code == OK, response.status
        [out] = response.result.output_files
        assert len(out.digest.hash) == 64
        assert await client.blob(out.digest) == b"blake3 input"


async def test_inline_blobs_spare_the_worker_its_tree_reads_and_small_uploads(
    exec_server: ReapiServer, tmp_path: Path
) -> None:
    """With inline blobs (the default) the lease brings the Command and Directories and the
    report carries the small outputs; with them off everything goes through the CAS. Same result."""
    inputs: dict[str, Node] = {"src": {"lib": {"a.txt": b"alpha"}, "b.txt": b"beta"}}
    argv = ["sh", "-c", "cat src/lib/a.txt src/b.txt > out.txt; echo done"]
    results = {}
    for limit in (1 << 20, 0):
        async with (worker_in_process(exec_server, tmp_path / f"w{limit}", inline_blob_limit=limit) as worker,
                    channel_to(exec_server) as channel):
            client = ActionClient(channel)
            response = await client.run(argv, inputs, outputs=["out.txt"], salt=str(limit).encode())
            assert response.status.code == OK, response.status
            directories = worker.local.inputs.directories
            assert worker.daemon.inline_limit == limit
            if limit:
                assert directories.inlined == 3 and directories.prefetched == directories.fetched == 0
            else:
                assert directories.inlined == 0 and directories.prefetched + directories.fetched == 3
            [out] = response.result.output_files
            assert not out.contents and not response.result.stdout_raw  # clients get digests only
            assert await client.blob(out.digest) == b"alphabeta"
            assert await client.blob(response.result.stdout_digest) == b"done\n"
            results[limit] = (out.digest, response.result.stdout_digest)
    assert results[1 << 20] == results[0]


async def test_a_cold_actions_small_files_come_with_its_lease(exec_server: ReapiServer, tmp_path: Path) -> None:
    """With inline files (the default) a cold action's small inputs arrive with the lease:
    no read of the worker's own before they are written; with them off they are read
    from the CAS. Same result, and every file enters the cache either way."""
    inputs: dict[str, Node] = {"src": {"lib": {"a.txt": b"alpha"}, "b.txt": b"beta"}, "c.txt": b"gamma"}
    argv = ["sh", "-c", "cat src/lib/a.txt src/b.txt c.txt > out.txt"]
    results = {}
    for limit in (512 << 10, 0):
        async with (worker_in_process(exec_server, tmp_path / f"w{limit}", inline_file_limit=limit) as worker,
                    channel_to(exec_server) as channel):
            client = ActionClient(channel)
            response = await client.run(argv, inputs, outputs=["out.txt"], salt=str(limit).encode())
            assert response.status.code == OK, response.status
            files = worker.local.inputs.files
            if limit:
                assert files.read_ahead.carried == 3 and files.read_ahead.started == 0
            else:
                assert files.read_ahead.carried == 0 and files.read_ahead.started == 1
            assert files.fetched_blobs == 3
            [out] = response.result.output_files
            assert await client.blob(out.digest) == b"alphabetagamma"
            results[limit] = out.digest
    assert results[512 << 10] == results[0]


async def test_a_file_the_workers_summary_only_seems_to_hold_is_read_from_the_cas(tmp_path: Path) -> None:
    """The server leaves out of a lease the files the worker's cache summary holds
    (docs/BOTS_PROTOCOL.md section 7); a Bloom filter's false positive (here: a file
    put in the summary only) is then simply read from the CAS, and the action runs
    with the right bytes."""
    async with (running_server(execution_config(dispatch="locality")) as server,
                worker_in_process(server, tmp_path / "w") as worker, channel_to(server) as channel):
        client = ActionClient(channel)
        files = worker.local.inputs.files
        phantom = b"never fetched before"
        assert files.watcher is not None
        files.watcher(Digest.of(phantom), True)  # the summary claims it; the cache does not hold it
        warm_up = await client.run(["true"], {"x.txt": b"x"})  # its report carries the summary
        assert warm_up.status.code == OK, warm_up.status
        carried, started = files.read_ahead.carried, files.read_ahead.started
        inputs: dict[str, Node] = {"a.txt": b"alpha", "b.txt": phantom, "c.txt": b"gamma"}
        response = await client.run(["sh", "-c", "cat a.txt b.txt c.txt > out.txt"], inputs, outputs=["out.txt"])
        assert response.status.code == OK, response.status
        assert files.read_ahead.carried - carried == 2  # not the one it seemed to hold
        assert files.read_ahead.started - started == 1  # that one read from the CAS
        [out] = response.result.output_files
        assert await client.blob(out.digest) == b"alpha" + phantom + b"gamma"


async def test_a_worker_with_every_slot_busy_still_hears_of_a_cancellation(
    exec_server: ReapiServer, client: ActionClient, tmp_path: Path
) -> None:
    """At full capacity the held call opens busy_call_delay after the lease arrived; a
    cancellation then reaches the action all the same."""
    marker = tmp_path / "pid"
    async with worker_in_process(exec_server, tmp_path / "w", concurrency=1, busy_call_delay=0.3,
                                 **OBSERVABLE) as worker:
        held_call_open = note_held_calls_while_busy(worker)
        digest = await client.action(["sh", "-c", f"echo $$ > {marker}; sleep 60"], salt=b"busy-cancel")
        stream = client.stream(digest)
        first = await stream.read()
        while not marker.exists() or not marker.read_text().strip():
            await asyncio.sleep(0.05)
        pid = int(marker.read_text())
        await asyncio.wait_for(held_call_open.wait(), timeout=30)  # past the delay, the call is open
        await client.operations.CancelOperation(lro_pb2.CancelOperationRequest(name=first.name))
        assert await wait_gone(pid)
        assert not pid_alive(pid)
        stream.cancel()
        response = await client.run(["true"], salt=b"after")  # the slot is free again
        assert response.status.code == OK and worker.metrics.outcomes["CANCELLED"] == 1


def note_held_calls_while_busy(worker: Worker) -> asyncio.Event:
    """An event set once ``worker`` opens an UpdateBotSession the server may hold (the
    worker's full call deadline, not a quick report) while it runs a lease."""
    opened = asyncio.Event()
    daemon = worker.daemon
    update = daemon.bots.UpdateBotSession

    def update_and_note(request: bots_pb2.UpdateBotSessionRequest, **kwargs: Any) -> Any:
        call = update(request, **kwargs)
        running = any(lease.state == bots_pb2.LeaseState.ACTIVE for lease in request.bot_session.leases)
        if running and kwargs.get("timeout") == daemon.settings.call_timeout:
            opened.set()
        return call

    daemon.bots.UpdateBotSession = update_and_note  # type: ignore[method-assign]
    return opened
