"""LocalExecutor on its own (a MemoryStore as the CAS): failures as statuses, cleanup, adoption."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from cas.digest import Digest
from cas.memory import MemoryStore
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.worker.trees import Link, Node, put_message, put_tree
from worker.directories import DirectoryCache
from worker.executors import Task
from worker.executors.local import ExecutionSettings, LocalExecutor
from worker.file_cache import FileCache
from worker.input_root import InputRootBuilder


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(max_bytes=1 << 30)


@pytest.fixture
async def executor(store: MemoryStore, tmp_path: Path) -> LocalExecutor:
    async def stores(instance_name: str) -> BlobStore:
        return store

    files = await FileCache.open(tmp_path / "cache", 1 << 30)
    (tmp_path / "work").mkdir()
    return LocalExecutor(stores, InputRootBuilder(files, DirectoryCache()), tmp_path / "work", ExecutionSettings())


async def task(store: MemoryStore, argv: list[str], inputs: dict[str, Node] | None = None, **command: object) -> Task:
    root = await put_tree(store, inputs or {})
    cmd = re_pb2.Command(arguments=argv, **command)  # type: ignore[arg-type]
    action = re_pb2.Action(command_digest=(await put_message(store, cmd)).to_proto(), input_root_digest=root.to_proto())
    return Task("lease-1", action, None)


async def test_missing_inputs_keep_their_precondition_failure(store: MemoryStore, executor: LocalExecutor) -> None:
    t = await task(store, ["cat", "a", "b"], {"a": b"here", "b": b"gone"})
    store._values.pop(Digest.of(b"gone"))
    response = await executor.execute(t)
    assert response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    failure = error_details_pb2.PreconditionFailure()
    assert response.status.details[0].Unpack(failure)
    assert [v.subject for v in failure.violations] == [f"blobs/{Digest.of(b'gone').hash}/4"]
    assert "missing" in response.message


async def test_a_missing_command_and_a_garbage_command(store: MemoryStore, executor: LocalExecutor) -> None:
    t = await task(store, ["true"])
    command = Digest.from_proto(t.action.command_digest)
    store._values.pop(command)
    response = await executor.execute(t)
    assert response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    garbage = b"\xff\xff not a proto"
    await store.put_bytes(Digest.of(garbage), garbage)
    t.action.command_digest.CopyFrom(Digest.of(garbage).to_proto())
    response = await executor.execute(t)
    assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a valid Command" in response.status.message


async def test_outputs_may_not_pass_through_input_symlinks(store: MemoryStore, executor: LocalExecutor, tmp_path: Path) -> None:
    t = await task(store, ["sh", "-c", "echo x > link/out"], {"real": {}, "link": Link("real")}, output_paths=["link/out"])
    response = await executor.execute(t)
    assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "symlink" in response.status.message


async def test_an_unknown_program_is_invalid_argument(store: MemoryStore, executor: LocalExecutor) -> None:
    response = await executor.execute(await task(store, ["definitely-not-a-program"]))
    assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "definitely-not-a-program" in response.status.message


async def test_scratch_is_removed_even_when_the_action_made_it_read_only(store: MemoryStore, executor: LocalExecutor, tmp_path: Path) -> None:
    response = await executor.execute(await task(store, ["sh", "-c", "mkdir -p d/e && touch d/e/f && chmod 0 d/e d"]))
    assert response.status.code == 0 and response.result.exit_code == 0
    await executor.drain()
    assert os.listdir(tmp_path / "work") == []


async def test_outputs_seed_the_local_cache_for_the_next_action(store: MemoryStore, executor: LocalExecutor) -> None:
    produced = await executor.execute(await task(store, ["sh", "-c", "echo compiled > a.o"], output_paths=["a.o"]))
    await executor.drain()
    [out] = produced.result.output_files
    digest = Digest.from_proto(out.digest)
    assert (digest, False) in executor.inputs.files
    fetched = executor.inputs.files.fetched_blobs
    consumer_task = await task(store, ["cat", "a.o"], {"a.o": b"compiled\n"})
    store._values.pop(digest)  # the next action can only get it from the local cache
    consumer = await executor.execute(consumer_task)
    assert consumer.status.code == 0 and consumer.result.exit_code == 0
    assert executor.inputs.files.fetched_blobs == fetched
