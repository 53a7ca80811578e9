"""Run ``reapi-worker`` as a real process, next to a server (in-process or a process).

    with reapi_worker_process(tmp_path / "w1", server.address, properties=["ISA=arm-a64"]) as worker:
        ...                       # the worker has a bot session with the server
        worker.kill()             # SIGKILL, as a crashed machine would

Its cache and work directories live under ``workdir`` and its output goes to
``workdir/worker.log``; ``problems()`` lists error lines. Readiness is the log line
of a created bot session. The helpers block (they poll a log file), so a test whose
server runs in its own event loop calls ``start_worker`` / ``stop`` through
``asyncio.to_thread``, or uses ``async_worker_process``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.logged_process import LoggedProcess
from worker.sandbox.cgroups import remove_leftover_groups

SESSION_CREATED = re.compile(r"bot session \S+ created \(bot id (\S+)\)")
STARTUP_TIMEOUT_S = 30.0


@dataclass
class WorkerProcess:
    process: LoggedProcess
    bot_id: str
    workdir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def cache_dir(self) -> Path:
        return self.workdir / "cache"

    def problems(self) -> list[str]:
        return self.process.problems()

    def log_text(self) -> str:
        return self.process.log_text()

    def kill(self) -> None:
        """SIGKILL the worker alone (its running actions are left orphaned, as on a crash)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert self.process.popen is not None
        self.process.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM the worker alone: it finishes or hands back its leases and exits."""
        os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process.popen is not None
        return self.process.popen.wait(timeout)


def worker_command(workdir: Path, server_address: str, *, bot_id: str, concurrency: int,
                   properties: Sequence[str], extra_args: Sequence[str]) -> list[str]:
    command = [
        sys.executable, "-m", "worker.app",
        "--server", server_address if "://" in server_address else f"grpc://{server_address}",
        "--concurrency", str(concurrency),
        "--cache-dir", str(workdir / "cache"),
        "--work-dir", str(workdir / "work"),
        "--bot-id", bot_id,
    ]
    for prop in properties:
        command += ["--property", prop]
    return command + list(extra_args)


def start_worker(workdir: Path, server_address: str, *, bot_id: str | None = None, concurrency: int = 2,
                 properties: Sequence[str] = (), extra_args: Sequence[str] = (),
                 log_level: str | None = None, prefix: Sequence[str] = ()) -> WorkerProcess:
    """Start a worker process and wait for its bot session (blocking).

    ``prefix``: a command the worker runs under (e.g. ``nsenter`` into another network namespace)."""
    workdir.mkdir(parents=True, exist_ok=True)
    bot_id = bot_id or f"worker-{workdir.name}"
    level = log_level or os.environ.get("REAPI_LOG_LEVEL", "INFO")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "REAPI_LOG_LEVEL": level}
    command = [*prefix, *worker_command(workdir, server_address, bot_id=bot_id, concurrency=concurrency,
                                        properties=properties, extra_args=extra_args), "--log-level", level]
    return launch_worker(command, workdir, bot_id, env)


def launch_worker(command: Sequence[str], workdir: Path, bot_id: str, env: Mapping[str, str],
                  startup_timeout: float = STARTUP_TIMEOUT_S) -> WorkerProcess:
    """Run a ready-made worker command (logging to ``workdir/worker.log``) until its session exists.

    ``start_worker`` builds the usual command; other launchers (an arm64 worker in an
    emulated rootfs, tests/support/arm_worker.py) bring their own.
    """
    process = LoggedProcess(f"reapi-worker {bot_id}", command, workdir / "worker.log", env=env)
    process.start()
    try:
        process.wait_for_log(SESSION_CREATED, startup_timeout)
    except BaseException:
        process.stop()
        raise
    return WorkerProcess(process, bot_id, workdir)


def stop_worker(worker: WorkerProcess) -> None:
    """Stop it, and remove the cgroups a killed worker could not (its next start would)."""
    worker.process.stop()
    remove_leftover_groups(worker.workdir / "work")


@contextmanager
def reapi_worker_process(workdir: Path, server_address: str, **kw: object) -> Iterator[WorkerProcess]:
    worker = start_worker(workdir, server_address, **kw)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        stop_worker(worker)


@asynccontextmanager
async def async_worker_process(workdir: Path, server_address: str, **kw: object) -> AsyncIterator[WorkerProcess]:
    """The same, for tests whose server runs in their own event loop (waits happen on a thread)."""
    worker = await asyncio.to_thread(start_worker, workdir, server_address, **kw)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        await asyncio.to_thread(stop_worker, worker)
