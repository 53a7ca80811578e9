"""LocalExecutor: run one action on this machine, start to finish.

Phases, each stamped into ExecutedActionMetadata:
1. input fetch: the Command and the input tree's directories (one GetTree) at
   once, then the exec root, hardlinked from the local FileCache, or, with bwrap,
   subtrees the action will not write into mounted read-only from InputTrees;
   output parents created.
2. execution: the runner, in the worker's sandbox (worker/sandbox/: bwrap, or the
   process fallback; deadline, limits, rusage), with live logs.
3. output upload: outputs collected on a thread; stdout/stderr hashed; only blobs
   the CAS lacks are sent; the live logs are closed at the same time.
The scratch directory is removed in the background after the result is returned,
and outputs are offered to the FileCache first (the next action may need them).
An action that ran into a limit, or filled the worker's disk (worker/disk.py), fails
RESOURCE_EXHAUSTED naming it; after a full disk its files go before the report does.

Every failure of the action itself becomes ``response.status``; missing inputs
keep their PreconditionFailure so the client re-uploads.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from cas.collector import Burst
from cas.digest import Digest
from cas.errors import DeadlineExceeded, Internal, InvalidArgument, MissingBlobs, ReapiError, ResourceExhausted
from cas.lru import Lru
from cas.store import BlobStore
from cas.decorators.verify import verify_bytes
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker import runner
from worker.disk import disk_filled, disk_space, remove_tree, tree_bytes, worker_disk_full
from worker.executors import Task
from worker.input_root import LINKS, InputRootBuilder, Mount, Placement
from worker.input_trees import open_paths
from worker.logs import LogTail
from worker.read_ahead import ReadAheadHandle
from worker.output_paths import create_output_parents, declared_outputs, working_directory
from worker.outputs import (
    MAX_INLINE_OUTPUT_BYTES,
    CollectedOutputs,
    OutputCollector,
    hash_file,
    inline_outputs,
    upload_missing,
)
from worker.sandbox.limits import ActionLimits, outputs_exceeded, stdio_exceeded
from worker.sandbox.sandbox import ActionRun, Sandbox
from worker.sandbox.warm import make_scratch

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
        sandbox: Sandbox | None = None,
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
        self.sandbox = sandbox  # None: the plain launcher, as the worker's user (tests of the parts)
        self.limits = sandbox.limits if sandbox is not None else ActionLimits()
        self.placement: Placement = sandbox.placement if sandbox is not None else LINKS

    async def execute(self, task: Task) -> re_pb2.ExecuteResponse:
        response = re_pb2.ExecuteResponse()
        meta = response.result.execution_metadata
        scratch: Path | None = None
        collected: CollectedOutputs | None = None
        disk_full = False
        inputs_placed = asyncio.Event()  # the cache adopts files written in place after this
        ahead: ReadAheadHandle | None = None
        # Young collections spaced out from here until the action's process has started
        # (cas/collector.py): the input fetch's collection then runs while the action does.
        burst = Burst()
        try:
            store = await self.stores(task.instance_name)
            stamp(meta.input_fetch_start_timestamp, self.clock())
            command, root_digest = await self._fetch_tree(task, store)
            keep_open = self._written_paths(command)
            cut = await self.inputs.mount_cut(root_digest, store, self.placement, keep_open)
            ahead = self.inputs.read_ahead(root_digest, store, self.placement, keep_open, task.inline_blobs)
            async with self._action(task, command, bool(cut)) as run, AsyncExitStack() as inputs:
                scratch = run.scratch  # mounted subtrees (``inputs``) stay until the outputs are collected
                try:
                    run.mount(await self._build_exec_root(command, root_digest, scratch, store, keep_open, inputs,
                                                          inputs_placed))
                finally:
                    ahead.close()  # what the fetch did not take (the action may not start, too)
                stamp(meta.input_fetch_completed_timestamp, self.clock())
                inputs_placed.set()
                collected, disk_full = await self._run_and_collect(task, command, run, store, response, burst.end)
        except ReapiError as err:
            response.status.CopyFrom(err.to_status())
            if isinstance(err, MissingBlobs):
                response.message = f"inputs missing from the CAS: {err.message}"
        except OSError as exc:
            # The worker's own disk failed (full, permissions): not the action's fault,
            # so INTERNAL, which the server answers by retrying on another worker.
            disk_full = exc.errno == errno.ENOSPC
            what = worker_disk_full(disk_space(self.work_dir), exc) if disk_full else f"worker I/O error: {exc}"
            log.error("lease %s: %s", task.lease_id, what)
            response.status.CopyFrom(Internal(what).to_status())
        finally:
            burst.end()
            inputs_placed.set()
            if ahead is not None:
                ahead.close()
            if scratch is None:
                pass
            elif disk_full:
                await asyncio.shield(self._free_disk(scratch))
            else:
                self._clean_up_later(scratch, collected)
        return response

    async def _free_disk(self, scratch: Path) -> None:
        """After the disk filled up: the action's files go now, then cache files if still short."""
        await asyncio.to_thread(remove_tree, scratch)
        shortfall = disk_space(self.work_dir).shortfall()
        if shortfall and self.inputs.trees is not None:
            self.inputs.trees.clear()  # their links may hold blocks the cache let go of
            await self.inputs.trees.drain()
            shortfall = disk_space(self.work_dir).shortfall()
        if shortfall:
            freed = self.inputs.files.make_room(shortfall)
            log.warning("the worker's disk is short of space: %d bytes of cache files evicted", freed)

    # -- phase 1: inputs ----------------------------------------------------------------

    async def _fetch_tree(self, task: Task, store: BlobStore) -> tuple[re_pb2.Command, Digest]:
        """The Command and the input tree's directories, fetched at the same time, unless
        the lease carried them (then no round trip at all)."""
        function = task.digest_function
        command_digest = Digest.from_proto(task.action.command_digest, function)
        root_digest = Digest.from_proto(task.action.input_root_digest, function)
        inline = task.inline_blobs
        command, _ = await asyncio.gather(self._command(command_digest, store, inline),
                                          self.inputs.layout(root_digest, store, inline))
        return command, root_digest

    @asynccontextmanager
    async def _action(self, task: Task, command: re_pb2.Command, mounts: bool) -> AsyncIterator[ActionRun]:
        """The action's scratch directory and launcher: the sandbox's (perhaps made ready
        beforehand, unless subtrees will be mounted), or, without one, a new directory
        and the plain launcher."""
        if self.sandbox is not None:
            async with self.sandbox.action(self.sandbox.network_for(task.action, command), mounts) as run:
                yield run
            return
        scratch = self.work_dir / uuid.uuid4().hex
        await asyncio.to_thread(make_scratch, scratch, None)
        yield ActionRun(scratch, runner.PlainLauncher(), None, self.limits, "")

    async def _build_exec_root(self, command: re_pb2.Command, root_digest: Digest, scratch: Path, store: BlobStore,
                               keep_open: set[str], stack: AsyncExitStack, placed: asyncio.Event) -> list[Mount]:
        """The exec root built in ``scratch``, with its outputs' parents (in the same thread
        job); the subtrees to mount into it stay made until ``stack`` closes. Fetched
        files join the cache once ``placed`` is set."""
        exec_root = scratch / "root"
        outputs, workdir, owner = declared_outputs(command), working_directory(command), self.placement.owner
        # The action writes its outputs and in its working directory: those stay real directories.
        return await stack.enter_async_context(self.inputs.prepare(
            root_digest, exec_root, store, self.placement, keep_open,
            then=lambda: create_output_parents(exec_root, outputs, workdir, owner), adopt_after=placed))

    @staticmethod
    def _written_paths(command: re_pb2.Command) -> set[str]:
        """The directories the action writes in (on the way to its outputs, and its working
        directory): never mounted read-only."""
        return open_paths([o.exec_path for o in declared_outputs(command)] + [working_directory(command)])

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

    async def _run_and_collect(self, task: Task, command: re_pb2.Command, run: ActionRun, store: BlobStore,
                               response: re_pb2.ExecuteResponse,
                               on_started: Callable[[], None] | None = None) -> tuple[CollectedOutputs, bool]:
        scratch = run.scratch
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
            stdio_limit=self.limits.stdio,
        )
        tails = self._start_tails(task, request)
        try:
            stamp(meta.execution_start_timestamp, self.clock())
            ran = await runner.run(request, run.launcher, on_started)
            problem = run.exceeded(ran)
            stamp(meta.execution_completed_timestamp, self.clock())
            stamp(meta.output_upload_start_timestamp, self.clock())
            if ran.stdio_exceeded:
                assert self.limits.stdio is not None
                os.truncate(request.stdout_path if ran.stdio_exceeded == "stdout" else request.stderr_path,
                            self.limits.stdio)
                problem = stdio_exceeded(self.limits, ran.stdio_exceeded)
            space = disk_space(scratch)
            disk_full = space.full
            if disk_full:
                problem = disk_filled(space, await asyncio.to_thread(tree_bytes, scratch))
                log.error("lease %s: %s", task.lease_id, problem.message)
            collected = await asyncio.to_thread(self._collect, command, exec_root, request, task,
                                                ran.timed_out or problem is not None)
            if problem is None and self.limits.outputs and collected.output_bytes > self.limits.outputs:
                problem = outputs_exceeded(self.limits, collected.output_bytes)
                collected = await asyncio.to_thread(self._collect, command, exec_root, request, task, True)
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
        elif problem is not None:
            response.status.CopyFrom(problem.to_status())
        return collected, disk_full

    def _start_tails(self, task: Task, request: runner.RunRequest) -> list[LogTail]:
        if self.live_logs is None:
            return []
        tails = [self.live_logs(name, path) for name, path in
                 ((task.stdout_stream, request.stdout_path), (task.stderr_stream, request.stderr_path)) if name]
        for tail in tails:
            tail.start()
        return tails

    def _collect(self, command: re_pb2.Command, exec_root: Path, request: runner.RunRequest,
                 task: Task, stopped: bool) -> CollectedOutputs:
        """Outputs (unless the action was stopped: timed out, over a limit) plus stdout and stderr (blocking)."""
        collector = OutputCollector(exec_root, task.digest_function, command.output_directory_format)
        collected = collector.out if stopped else collector.collect(declared_outputs(command))
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
        # Adopted outputs keep their blocks: only while the disk has room to spare.
        if collected is not None and collected.files and disk_space(scratch).roomy:
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
