"""Run one command: its own process group, a deadline, cancellation, resource usage.

Why it is built this way:
- The child gets its own session (so its own process group); a timeout or a
  cancellation signals the whole group, and stray background processes left when
  the main process exits are killed too, so nothing outlives its action.
- stdout and stderr go straight to files the caller names. The child never blocks
  on a full pipe, the worker copies no bytes while it runs, and the live log
  streamer tails the files (worker/logs.py).
- Exit is detected with a pidfd (Linux) without reaping, so the group can still be
  signalled safely (a zombie leader keeps its pid and group id reserved); then
  ``wait4`` reaps it and returns its rusage (CPU user/sys, peak RSS).
- Spawning uses ``subprocess.Popen`` without a shell; CPython uses vfork for it, which
  keeps spawning cheap even from a large process.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cas.errors import InvalidArgument


@dataclass(frozen=True)
class RunRequest:
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    timeout: float | None = None  # seconds; None means no deadline
    kill_grace: float = 2.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # 128 + signal number when killed by a signal, as shells report it
    timed_out: bool
    user_cpu_seconds: float
    system_cpu_seconds: float
    max_rss_bytes: int
    wall_seconds: float


def _maxrss_bytes(ru_maxrss: int) -> int:
    # Linux reports kilobytes, macOS bytes.
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _ExitWatch:
    """Resolves when the child has exited (a zombie, not yet reaped)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self._pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except OSError:
                self._pidfd = -1
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._on_exit)
        else:
            # Without pidfds a thread waits, still without reaping (WNOWAIT).
            task = loop.run_in_executor(None, os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            task.add_done_callback(lambda _: self._on_exit())

    def _on_exit(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        self.close()

    def close(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def spawn(request: RunRequest) -> subprocess.Popen[bytes]:
    """Start the command; INVALID_ARGUMENT when it cannot be executed at all."""
    stdout = os.open(request.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        stderr = os.open(request.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            return subprocess.Popen(
                list(request.argv),
                cwd=request.cwd,
                env=dict(request.env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError, OSError) as exc:
            raise InvalidArgument(f"cannot run {request.argv[0]!r}: {exc.strerror or exc}") from None
        finally:
            os.close(stderr)
    finally:
        os.close(stdout)


async def run(request: RunRequest) -> RunResult:
    """Run to completion, or until the deadline; cancellation kills the process group."""
    if not request.argv:
        raise InvalidArgument("the Command has no arguments")
    started = time.monotonic()
    process = spawn(request)
    watch = _ExitWatch(process.pid)
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited), request.timeout)
        except TimeoutError:
            timed_out = True
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(watch.exited), request.kill_grace)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await watch.exited
    except asyncio.CancelledError:
        _signal_group(process.pid, signal.SIGKILL)
        await asyncio.shield(_reap(process, watch))
        raise
    # The leader is a zombie: its group id is still ours. Kill stragglers, then reap.
    _signal_group(process.pid, signal.SIGKILL)
    status, usage = await _reap(process, watch)
    return RunResult(
        exit_code=_exit_code(status),
        timed_out=timed_out,
        user_cpu_seconds=usage.ru_utime,
        system_cpu_seconds=usage.ru_stime,
        max_rss_bytes=_maxrss_bytes(usage.ru_maxrss),
        wall_seconds=time.monotonic() - started,
    )


async def _reap(process: subprocess.Popen[bytes], watch: _ExitWatch) -> tuple[int, resource.struct_rusage]:
    await watch.exited
    watch.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never reaps it again
    return status, usage
