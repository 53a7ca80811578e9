"""The zero-config reapi-server starts its own worker process; with a config file it does not."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import grpc
import pytest

from cas.config import ConfigError
from server.local_worker import parse_local_worker, worker_command, worker_target
from tests.support.logged_process import LoggedProcess
from tests.support.processes import PATIENCE_S
from tests.worker.actions import ActionClient

LISTENING = re.compile(r"listening on (\S+:\d+)")
SESSION = re.compile(r"bot session \S+ created")
SUMMARY_END = re.compile(r"console: http\S+ +metrics: ")  # the start-up summary's last line


def start_server(tmp_path: Path, *args: str) -> LoggedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    # Port 0 for HTTP too: the zero-config 127.0.0.1:8981 may be taken by another server on the machine.
    process = LoggedProcess("reapi-server", [sys.executable, "-m", "server.app", "--listen", "127.0.0.1:0",
                                            "--http-listen", "127.0.0.1:0", *args],
                            tmp_path / "server.log", env=env)
    process.start()
    return process


def worker_pids(server_pid: int) -> list[int]:
    """reapi-worker processes whose parent is ``server_pid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server_pid and b"worker.app" in cmdline:
                pids.append(int(entry))
    return pids


async def test_zero_config_server_runs_actions_on_its_own_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        address = server.wait_for_log(LISTENING, 30).group(1)
        server.wait_for_log(SESSION, 30)
        [worker_pid] = worker_pids(server.pid)
        async with grpc.aio.insecure_channel(address) as channel:
            response = await ActionClient(channel).run(["sh", "-c", "echo from the local worker"])
            assert response.status.code == 0 and response.result.exit_code == 0
            assert await ActionClient(channel).blob(response.result.stdout_digest) == b"from the local worker\n"
        assert (tmp_path / "cache" / "reapi" / "worker" / "cache").is_dir()  # the worker's defaults
    finally:
        assert server.stop() == 0
    deadline = time.monotonic() + PATIENCE_S
    while os.path.exists(f"/proc/{worker_pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{worker_pid}"), "the local worker outlived the server"
    assert not server.problems(), server.problems()


def test_no_worker_with_a_config_file_or_when_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        '[stores.cas-memory]\ntype = "memory"\n[stores.cas]\ntype = "verify"\ninner = "cas-memory"\n'
        '[stores.ac]\ntype = "memory"\n[[instances]]\nname = "*"\ncas = "cas"\nac = "ac"\n'
    )
    for label, args in (("config file", ["--config", str(config)]), ("flag", ["--no-local-worker"])):
        server = start_server(tmp_path / label, *args)
        try:
            server.wait_for_log(LISTENING, 30)
            # The summary's last line comes after the server decided whether to start a
            # worker: from then on none can appear, however slow the machine was so far.
            server.wait_for_log(SUMMARY_END, 30)
            assert "with a local worker" not in server.log_text(), label
            time.sleep(1.0)
            assert worker_pids(server.pid) == [], label
            assert "local worker started" not in server.log_text()
        finally:
            server.stop()


def test_local_worker_settings() -> None:
    assert parse_local_worker({}, zero_config=True).enabled
    assert not parse_local_worker({}, zero_config=False).enabled
    config = parse_local_worker({"enabled": True, "concurrency": 3, "args": ["--property", "pool=local"]}, False)
    command = worker_command(config, worker_target("0.0.0.0", 8980), "INFO")
    assert command[command.index("--server") + 1] == "grpc://127.0.0.1:8980"
    assert command[-4:] == ["--concurrency", "3", "--property", "pool=local"]
    assert "--exit-with-parent" in command
    assert worker_target("10.1.2.3", 9) == "grpc://10.1.2.3:9"
    for bad in ({"enabled": "yes"}, {"concurrency": 0}, {"args": "x"}, {"colour": 1}):
        with pytest.raises(ConfigError):
            parse_local_worker(bad, True)


def test_the_local_worker_stops_when_the_server_dies(tmp_path: Path) -> None:
    import signal

    server = start_server(tmp_path)
    try:
        server.wait_for_log(SESSION, 30)
        [worker_pid] = worker_pids(server.pid)
        os.kill(server.pid, signal.SIGKILL)  # no chance to stop its worker
        deadline = time.monotonic() + PATIENCE_S
        while os.path.exists(f"/proc/{worker_pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{worker_pid}"), "an orphaned local worker kept running"
        assert "parent process" in server.log_text()
    finally:
        server.stop()
