"""Run one command: a launcher, a deadline, cancellation, output caps, resource usage.

Why it is built this way:
- *How* the command is started and stopped is a ``Launcher``: ``PlainLauncher`` here
  (its own session and process group), the bubblewrap sandbox and the process
  fallback in worker/sandbox/. The runner owns what every launcher shares: the
  deadline (terminate, then kill after ``kill_grace``), cancellation (kill), caps on
  stdout/stderr, and reaping.
- stdout and stderr go straight to files the caller names. The child never blocks
  on a full pipe, the worker copies no bytes while it runs, and the live log
  streamer tails the files (worker/logs.py).
- Exit is detected with a pidfd (Linux) without reaping, so the group can still be
  signalled safely (a zombie leader keeps its pid and group id reserved); then
  ``wait4`` reaps it and returns its rusage (CPU user/sys, peak RSS), which covers
  every descendant it reaped.
- Spawning uses ``subprocess.Popen`` without a shell, from the event loop's thread;
  CPython uses vfork for it, which keeps spawning cheap even from a large process.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cas.errors import InvalidArgument

STDIO_POLL_S = 0.1


@dataclass(frozen=True)
class RunRequest:
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    timeout: float | None = None  # seconds; None means no deadline
    kill_grace: float = 2.0  # seconds between SIGTERM and SIGKILL
    stdio_limit: int | None = None  # bytes each of stdout and stderr may reach; past it the action is killed


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # 128 + signal number when killed by a signal, as shells report it
    timed_out: bool
    user_cpu_seconds: float
    system_cpu_seconds: float
    max_rss_bytes: int
    wall_seconds: float
    stdio_exceeded: str = ""  # "stdout" or "stderr" when that stream passed ``stdio_limit``


class Launched(Protocol):
    """One started command, as its launcher controls it."""

    process: subprocess.Popen[bytes]

    async def started(self) -> None:
        """Finish starting (e.g. move it into its cgroups, then let it run)."""

    def terminate(self) -> None:
        """Ask every process of the action to stop (SIGTERM)."""

    def kill(self) -> None:
        """SIGKILL every process of the action (without waiting)."""

    async def finished(self) -> None:
        """After the first process exited: make sure nothing of the action is left, and wait for that."""


class Launcher(Protocol):
    def launch(self, request: RunRequest) -> Launched:
        """Start the command (on the event loop's thread); INVALID_ARGUMENT if it cannot run."""


def _maxrss_bytes(ru_maxrss: int) -> int:
    # Linux reports kilobytes, macOS bytes.
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
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


def open_stdio(request: RunRequest) -> tuple[int, int]:
    stdout = os.open(request.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        stderr = os.open(request.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except BaseException:
        os.close(stdout)
        raise
    return stdout, stderr


def cannot_run(argv0: str, exc: OSError) -> InvalidArgument:
    return InvalidArgument(f"cannot run {argv0!r}: {exc.strerror or exc}")


class PlainLauncher:
    """The command in its own session and process group, as the worker's own user."""

    def launch(self, request: RunRequest) -> Launched:
        stdout, stderr = open_stdio(request)
        try:
            process = subprocess.Popen(
                list(request.argv), cwd=request.cwd, env=dict(request.env), stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=stderr, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise cannot_run(request.argv[0], exc) from None
        finally:
            os.close(stdout)
            os.close(stderr)
        return GroupLaunched(process)


class GroupLaunched:
    """A command whose processes are its process group."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    async def started(self) -> None:
        pass

    def terminate(self) -> None:
        signal_group(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.process.pid, signal.SIGKILL)

    async def finished(self) -> None:
        # The leader is a zombie: its group id is still ours. Kill stragglers.
        self.kill()


async def run(request: RunRequest, launcher: Launcher | None = None,
              on_started: Callable[[], None] | None = None) -> RunResult:
    """Run to completion, or until the deadline; cancellation kills every process of it.
    ``on_started`` is called once the action's process has started."""
    if not request.argv:
        raise InvalidArgument("the Command has no arguments")
    started = time.monotonic()
    launched = (launcher or PlainLauncher()).launch(request)
    process = launched.process
    watch = _ExitWatch(process.pid)
    timed_out = False
    over = ""
    try:
        await launched.started()
        if on_started is not None:
            on_started()
        outcome = await _wait(watch, request)
        if outcome != "exited":
            timed_out = outcome == "timeout"
            over = "" if timed_out else outcome
            if timed_out:
                launched.terminate()
            else:
                launched.kill()
            try:
                await asyncio.wait_for(asyncio.shield(watch.exited), request.kill_grace if timed_out else None)
            except TimeoutError:
                launched.kill()
                await watch.exited
    except BaseException:
        await asyncio.shield(_stop(launched, process, watch))
        raise
    await launched.finished()
    status, usage = await _reap(process, watch)
    return RunResult(
        exit_code=_exit_code(status),
        timed_out=timed_out,
        user_cpu_seconds=usage.ru_utime,
        system_cpu_seconds=usage.ru_stime,
        max_rss_bytes=_maxrss_bytes(usage.ru_maxrss),
        wall_seconds=time.monotonic() - started,
        stdio_exceeded=over,
    )


async def _wait(watch: _ExitWatch, request: RunRequest) -> str:
    """"exited", "timeout", or the stream ("stdout"/"stderr") that passed its cap."""
    if request.stdio_limit is None:
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited), request.timeout)
            return "exited"
        except TimeoutError:
            return "timeout"
    deadline = None if request.timeout is None else time.monotonic() + request.timeout
    while True:
        wait = STDIO_POLL_S if deadline is None else min(STDIO_POLL_S, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited), max(0.0, wait))
            return over_cap(request) or "exited"
        except TimeoutError:
            pass
        if over := over_cap(request):
            return over
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"


def over_cap(request: RunRequest) -> str:
    """The stream past ``stdio_limit``, or ""."""
    assert request.stdio_limit is not None
    for stream, path in (("stdout", request.stdout_path), ("stderr", request.stderr_path)):
        try:
            if os.stat(path).st_size > request.stdio_limit:
                return stream
        except FileNotFoundError:
            pass
    return ""


async def _stop(launched: Launched, process: subprocess.Popen[bytes], watch: _ExitWatch) -> None:
    """Kill everything of the action (cancelled, or starting it failed), then reap it."""
    launched.kill()
    await watch.exited
    await launched.finished()
    await _reap(process, watch)


async def _reap(process: subprocess.Popen[bytes], watch: _ExitWatch) -> tuple[int, resource.struct_rusage]:
    await watch.exited
    watch.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never reaps it again
    return status, usage
