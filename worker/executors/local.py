"""LocalExecutor: run one action on this machine, start to finish.

Phases, each stamped into ExecutedActionMetadata:
1. input fetch: the Command and the input tree's directories (one GetTree) at
   once, then the exec root, hardlinked from the local FileCache; output parents
   created.
2. execution: the runner (own process group, deadline, rusage), with live logs.
3. output upload: outputs collected on a thread; stdout/stderr hashed; only blobs
   the CAS lacks are sent; the live logs are closed at the same time.
The scratch directory is removed in the background after the result is returned,
and outputs are offered to the FileCache first (the next action may need them).

Every failure of the action itself becomes ``response.status``; missing inputs
keep their PreconditionFailure so the client re-uploads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from cas.digest import Digest
from cas.errors import DeadlineExceeded, Internal, InvalidArgument, MissingBlobs, ReapiError
from cas.lru import Lru
from cas.store import BlobStore
from cas.decorators.verify import verify_bytes
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker import runner
from worker.executors import Task
from worker.input_root import InputRootBuilder
from worker.logs import LogTail
from worker.output_paths import create_output_parents, declared_outputs, working_directory
from worker.outputs import (
    MAX_INLINE_OUTPUT_BYTES,
    CollectedOutputs,
    OutputCollector,
    hash_file,
    inline_outputs,
    upload_missing,
)

log = logging.getLogger("reapi.worker")

StoreProvider = Callable[[str], Awaitable[BlobStore]]
LogTailFactory = Callable[[str, Path], LogTail]


@dataclass(frozen=True)
class ExecutionSettings:
    default_path: str = "/usr/local/bin:/usr/bin:/bin"  # when the Command sets no PATH (Buck2)
    default_timeout: float | None = None  # seconds, when the Action sets none
    max_timeout: float | None = None  # an upper bound on any Action's timeout
    kill_grace: float = 2.0  # SIGTERM -> SIGKILL


def stamp(field: object, seconds: float) -> None:
    field.FromNanoseconds(int(seconds * 1e9))  # type: ignore[attr-defined]


def resource_usage(result: runner.RunResult) -> struct_pb2.Struct:
    usage = struct_pb2.Struct()
    usage.update({
        "user_cpu_seconds": result.user_cpu_seconds,
        "system_cpu_seconds": result.system_cpu_seconds,
        "max_rss_bytes": result.max_rss_bytes,
        "wall_seconds": result.wall_seconds,
    })
    return usage


class LocalExecutor:
    def __init__(
        self,
        stores: StoreProvider,
        inputs: InputRootBuilder,
        work_dir: Path,
        settings: ExecutionSettings,
        live_logs: LogTailFactory | None = None,
        clock: Callable[[], float] = time.time,
        max_cached_commands: int = 1024,
    ) -> None:
        self.stores = stores
        self.inputs = inputs
        self.work_dir = work_dir
        self.settings = settings
        self.live_logs = live_logs
        self.clock = clock
        self._commands: Lru[Digest, re_pb2.Command] = Lru()  # by entries
        self._max_commands = max_cached_commands
        self._cleanups: set[asyncio.Task[None]] = set()

    async def execute(self, task: Task) -> re_pb2.ExecuteResponse:
        response = re_pb2.ExecuteResponse()
        meta = response.result.execution_metadata
        scratch = self.work_dir / uuid.uuid4().hex
        collected: CollectedOutputs | None = None
        try:
            store = await self.stores(task.instance_name)
            stamp(meta.input_fetch_start_timestamp, self.clock())
            command = await self._fetch_inputs(task, scratch, store)
            stamp(meta.input_fetch_completed_timestamp, self.clock())
            collected = await self._run_and_collect(task, command, scratch, store, response)
        except ReapiError as err:
            response.status.CopyFrom(err.to_status())
            if isinstance(err, MissingBlobs):
                response.message = f"inputs missing from the CAS: {err.message}"
        except OSError as exc:
            # The worker's own disk failed (full, permissions): not the action's fault,
            # so INTERNAL, which the server answers by retrying on another worker.
            log.error("lease %s: worker I/O error: %s", task.lease_id, exc)
            response.status.CopyFrom(Internal(f"worker I/O error: {exc}").to_status())
        finally:
            self._clean_up_later(scratch, collected)
        return response

    # -- phase 1: inputs ----------------------------------------------------------------

    async def _fetch_inputs(self, task: Task, scratch: Path, store: BlobStore) -> re_pb2.Command:
        function = task.digest_function
        command_digest = Digest.from_proto(task.action.command_digest, function)
        root_digest = Digest.from_proto(task.action.input_root_digest, function)
        # The Command and the input tree's directories are fetched at the same time,
        # unless the lease carried them (then no round trip at all).
        inline = task.inline_blobs
        command, _ = await asyncio.gather(self._command(command_digest, store, inline),
                                          self.inputs.layout(root_digest, store, inline))
        outputs = declared_outputs(command)
        workdir = working_directory(command)
        await asyncio.to_thread(os.mkdir, scratch)
        exec_root = scratch / "root"
        await self.inputs.build(root_digest, exec_root, store)
        await asyncio.to_thread(create_output_parents, exec_root, outputs, workdir)
        return command

    async def _command(self, digest: Digest, store: BlobStore, inline: Mapping[Digest, bytes]) -> re_pb2.Command:
        cached = self._commands.get(digest)
        if cached is not None:
            return cached
        data = inline.get(digest)
        if data is None or Digest.of(data, digest.function) != digest:  # a bad inline copy: read the CAS
            found = await store.get_many([digest])
            if digest not in found:
                raise MissingBlobs([digest], "Command")
            data = found[digest]
        try:
            verify_bytes(digest, data)
            command = re_pb2.Command()
            command.ParseFromString(data)
        except (ReapiError, DecodeError) as exc:
            raise InvalidArgument(f"the Command {digest} is not a valid Command message: {exc}") from None
        self._commands.put(digest, command)
        self._commands.evict(self._max_commands)
        return command

    # -- phase 2 and 3: run, collect, upload ------------------------------------------------

    def _environment(self, command: re_pb2.Command) -> dict[str, str]:
        env = {v.name: v.value for v in command.environment_variables}
        env.setdefault("PATH", self.settings.default_path)
        return env

    def _timeout(self, action: re_pb2.Action) -> float | None:
        timeout = action.timeout.ToNanoseconds() / 1e9 if action.HasField("timeout") else 0.0
        chosen = timeout if timeout > 0 else self.settings.default_timeout
        if self.settings.max_timeout is not None:
            chosen = min(chosen, self.settings.max_timeout) if chosen else self.settings.max_timeout
        return chosen or None

    async def _run_and_collect(self, task: Task, command: re_pb2.Command, scratch: Path, store: BlobStore,
                               response: re_pb2.ExecuteResponse) -> CollectedOutputs:
        exec_root = scratch / "root"
        meta = response.result.execution_metadata
        request = runner.RunRequest(
            argv=list(command.arguments),
            env=self._environment(command),
            cwd=exec_root / working_directory(command),
            stdout_path=scratch / "stdout",
            stderr_path=scratch / "stderr",
            timeout=self._timeout(task.action),
            kill_grace=self.settings.kill_grace,
        )
        tails = self._start_tails(task, request)
        try:
            stamp(meta.execution_start_timestamp, self.clock())
            ran = await runner.run(request)
            stamp(meta.execution_completed_timestamp, self.clock())
            stamp(meta.output_upload_start_timestamp, self.clock())
            collected = await asyncio.to_thread(self._collect, command, exec_root, request, task, ran.timed_out)
            finishing = [t.finish() for t in tails]
            tails = []
            # Small outputs ride in the report when the server agreed; the rest is uploaded.
            budget = min(task.inline_limit, MAX_INLINE_OUTPUT_BYTES)
            to_upload = inline_outputs(collected.result, collected.blobs, budget, task.digest_function)
            await asyncio.gather(upload_missing(store, to_upload), *finishing)
        finally:
            for tail in tails:
                tail.close()
        stamp(meta.output_upload_completed_timestamp, self.clock())
        result = response.result
        result.MergeFrom(collected.result)
        result.exit_code = ran.exit_code
        result.execution_metadata.auxiliary_metadata.add().Pack(resource_usage(ran))
        if ran.timed_out:
            timed_out = DeadlineExceeded(f"the action timed out after {request.timeout:g} s and was killed")
            response.status.CopyFrom(timed_out.to_status())
        return collected

    def _start_tails(self, task: Task, request: runner.RunRequest) -> list[LogTail]:
        if self.live_logs is None:
            return []
        tails = [self.live_logs(name, path) for name, path in
                 ((task.stdout_stream, request.stdout_path), (task.stderr_stream, request.stderr_path)) if name]
        for tail in tails:
            tail.start()
        return tails

    def _collect(self, command: re_pb2.Command, exec_root: Path, request: runner.RunRequest,
                 task: Task, timed_out: bool) -> CollectedOutputs:
        """Outputs (unless the action timed out) plus stdout and stderr (blocking)."""
        collector = OutputCollector(exec_root, task.digest_function, command.output_directory_format)
        collected = collector.out if timed_out else collector.collect(declared_outputs(command))
        for path, field in ((request.stdout_path, "stdout_digest"), (request.stderr_path, "stderr_digest")):
            digest, source = hash_file(path, task.digest_function)
            if digest.size_bytes:
                collected.blobs.setdefault(digest, source)
                getattr(collected.result, field).CopyFrom(digest.to_proto())
        return collected

    # -- cleanup ---------------------------------------------------------------------------

    def _clean_up_later(self, scratch: Path, collected: CollectedOutputs | None) -> None:
        task = asyncio.create_task(self._clean_up(scratch, collected))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _clean_up(self, scratch: Path, collected: CollectedOutputs | None) -> None:
        files = self.inputs.files
        if collected is not None and collected.files:
            adopted = await asyncio.to_thread(
                lambda: [(d, x) for path, d, x in collected.files if _sole_link(path) and files.adopt(path, d, x)]
            )
            for digest, executable in adopted:
                files.note_adopted(digest, executable)
        await asyncio.to_thread(remove_tree, scratch)

    async def drain(self) -> None:
        """Wait for background cleanups (at shutdown)."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)


def _sole_link(path: Path) -> bool:
    """Only files with no other name may enter the cache: a shared inode could be an input."""
    try:
        return os.lstat(path).st_nlink == 1
    except OSError:
        return False


def remove_tree(path: Path) -> None:
    """rm -rf, also through directories the action made read-only (blocking)."""
    def make_writable_and_retry(function, failed_path, _exc_info):  # type: ignore[no-untyped-def]
        parent = os.path.dirname(failed_path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, stat.S_IRWXU)
            function(failed_path)
        except FileNotFoundError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)
