"""The runner with real processes: exit codes, environment, deadlines, cancellation, rusage."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from cas.errors import InvalidArgument
from worker.runner import RunRequest, run

ENV = {"PATH": "/usr/bin:/bin"}
from tests.support.processes import pid_alive, wait_gone


def request(tmp_path: Path, *argv: str, **kw: object) -> RunRequest:
    return RunRequest(list(argv), kw.pop("env", ENV), tmp_path, tmp_path / "out", tmp_path / "err", **kw)  # type: ignore[arg-type]


async def test_exit_code_output_files_and_exact_environment(tmp_path: Path) -> None:
    result = await run(request(tmp_path, "sh", "-c", 'echo "out $FOO"; echo err >&2; env | sort > env.txt; exit 3',
                               env={"PATH": "/usr/bin:/bin", "FOO": "bar"}))
    assert result.exit_code == 3 and not result.timed_out
    assert (tmp_path / "out").read_text() == "out bar\n"
    assert (tmp_path / "err").read_text() == "err\n"
    names = {line.split("=", 1)[0] for line in (tmp_path / "env.txt").read_text().splitlines()}
    assert names <= {"PATH", "FOO", "PWD", "SHLVL", "_", "OLDPWD"}  # sh adds a few of its own
    assert "HOME" not in names


async def test_stdin_is_dev_null_and_working_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    result = await run(RunRequest(["sh", "-c", "pwd; cat"], ENV, tmp_path / "sub", tmp_path / "out", tmp_path / "err"))
    assert result.exit_code == 0
    assert (tmp_path / "out").read_text() == f"{tmp_path / 'sub'}\n"


async def test_runs_in_its_own_process_group(tmp_path: Path) -> None:
    await run(request(tmp_path, "sh", "-c", "ps -o pgid= -p $$; ps -o sid= -p $$; echo $$"))
    pgid, sid, pid = (tmp_path / "out").read_text().split()
    assert pgid == pid == sid
    assert int(pgid) != os.getpgid(0)


async def test_signal_death_is_128_plus_signal(tmp_path: Path) -> None:
    result = await run(request(tmp_path, "sh", "-c", "kill -9 $$"))
    assert result.exit_code == 128 + signal.SIGKILL


async def test_timeout_terminates_the_group_and_keeps_partial_output(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    result = await run(request(tmp_path, "sh", "-c", f"echo started; sleep 30 & echo $! > {pid_file}; wait",
                               timeout=0.5, kill_grace=1.0))
    assert result.timed_out
    assert result.exit_code == 128 + signal.SIGTERM
    assert (tmp_path / "out").read_text() == "started\n"
    assert await wait_gone(int(pid_file.read_text()))  # the background child died too


async def test_timeout_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run(request(tmp_path, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done",
                               timeout=0.3, kill_grace=0.3))
    assert result.timed_out and result.exit_code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 10


async def test_stray_background_processes_die_with_the_action(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    result = await run(request(tmp_path, "sh", "-c", f"sleep 30 > /dev/null 2>&1 & echo $! > {pid_file}"))
    assert result.exit_code == 0
    assert await wait_gone(int(pid_file.read_text()))


async def test_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(run(request(tmp_path, "sh", "-c", f"echo $$ > {pid_file}; sleep 30 & wait")))
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(int(pid_file.read_text()))


async def test_resource_usage_is_measured(tmp_path: Path) -> None:
    # Burn some CPU and touch ~64 MiB so both numbers are clearly non-zero.
    code = "import time\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\n"
    result = await run(request(tmp_path, "python3", "-c", code))
    assert result.exit_code == 0
    assert result.user_cpu_seconds + result.system_cpu_seconds >= 0.15
    assert result.max_rss_bytes >= 64 << 20


async def test_a_command_that_cannot_start_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no-such-tool"):
        await run(request(tmp_path, "no-such-tool"))
    with pytest.raises(InvalidArgument, match="no arguments"):
        await run(request(tmp_path))


async def test_relative_argv0_resolves_against_the_working_directory(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho from-tool\n")
    tool.chmod(0o755)
    result = await run(request(tmp_path, "bin/tool"))
    assert result.exit_code == 0 and (tmp_path / "out").read_text() == "from-tool\n"


async def test_on_started_is_called_once_the_process_runs_and_before_it_ends(tmp_path: Path) -> None:
    """The worker ends its input fetch's collector burst there (cas/collector.py). The
    action here waits for a file only ``on_started`` writes: had it come after the exit,
    the action would run into its timeout."""
    calls: list[str] = []

    def started() -> None:
        calls.append("started")
        (tmp_path / "gate").write_text("go")

    result = await run(request(tmp_path, "sh", "-c", "while [ ! -e gate ]; do sleep 0.01; done", timeout=30),
                       on_started=started)
    assert result.exit_code == 0 and not result.timed_out
    assert calls == ["started"]
