"""Helpers for the sealed-action tests: worker processes in each sandbox mode, and
finding an action's processes from outside (by a token in their command line).

Sandbox modes the tests run workers in (``MODES``):
- ``bwrap``: the default, in a work directory the action user can enter (bwrap in
  its setuid mode);
- ``bwrap-setpriv``: the default where it cannot (pytest's private temp directory);
- ``process``: the fallback, actions as the unprivileged user, with cgroups;
- ``process-nocgroup``: the fallback with no cgroup (process groups and the orphan reaper);
- ``process-root``: the fallback running actions as root (inputs are copies).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from tests.support.waiting import until
from tests.support.worker_process import WorkerProcess, async_worker_process

MODES = {
    "bwrap": "",
    "bwrap-setpriv": "",
    "process": 'sandbox = "process"\n',
    "process-nocgroup": 'sandbox = "process"\ncgroups = false\n',
    "process-root": 'sandbox = "process"\nrun_as = "root"\n',
}


@contextmanager
def reachable_dir() -> Iterator[Path]:
    """A directory under /tmp that any user may pass through (not list): where the
    action user can reach exec roots (pytest's own temp directory is private)."""
    path = Path(tempfile.mkdtemp(prefix="reapi-sandbox-", dir="/tmp"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_dir(mode: str, tmp_path: Path, reachable: Path, name: str = "") -> Path:
    base = tmp_path if mode == "bwrap-setpriv" else reachable
    return base / (name or f"worker-{mode}")


def worker_setup(mode: str, tmp_path: Path, reachable: Path, config: str = "", name: str = "",
                 extra_args: Sequence[str] = ()) -> tuple[Path, list[str]]:
    """The work directory and arguments of a worker in ``mode`` with extra ``[worker]`` lines."""
    workdir = worker_dir(mode, tmp_path, reachable, name)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "worker.toml"
    config_file.write_text("[worker]\n" + MODES[mode] + config)
    return workdir, ["--config", str(config_file), *extra_args]


@asynccontextmanager
async def sandboxed_worker(mode: str, tmp_path: Path, reachable: Path, server_address: str, config: str = "",
                           name: str = "", **kw: object) -> AsyncIterator[WorkerProcess]:
    """A worker process in ``mode`` with extra ``[worker]`` lines ``config`` (in directory ``name``)."""
    workdir, extra = worker_setup(mode, tmp_path, reachable, config, name, kw.pop("extra_args", ()))  # type: ignore[arg-type]
    async with async_worker_process(workdir, server_address, extra_args=extra, **kw) as worker:
        yield worker


def token() -> str:
    """A fractional number of seconds no other process uses: ``sleep 300.<token>``."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def processes_with(word: str) -> list[int]:
    """Pids whose command line has ``word`` as one argument."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if word.encode() in argv and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Pids with ``text`` anywhere in their command line (a worker's directory, say)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


async def wait_until(condition: Callable[[], object], what: str = "condition") -> None:
    """Until ``condition()`` is truthy (a process list empty or not, a log line)."""
    await until(lambda: bool(condition()), what, interval=0.05)
