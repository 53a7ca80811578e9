"""Issue 12, acceptance 2: what stops reapi-server or reapi-worker from starting is
one line on stderr and exit code 2, never a traceback; --version on both."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.cli import version
from tests.support import toml_writer
from tests.support.server_process import reapi_server_process, server_config

SERVER = [sys.executable, "-m", "server.app"]
WORKER = [sys.executable, "-m", "worker.app"]


def run(command: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# A line of the log (stores say what they opened before a later part fails).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed start printed besides INFO logs (asserting it is one, with exit code 2)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_writer.dumps(config))
    return path


def test_version_of_both_commands() -> None:
    assert run([*SERVER, "--version"]).stdout.strip() == f"reapi-server {version()}"
    assert run([*WORKER, "--version"]).stdout.strip() == f"reapi-worker {version()}"
    assert version() != "unknown"


@pytest.mark.parametrize("command", [SERVER, WORKER], ids=["server", "worker"])
def test_a_bad_log_level_lists_the_choices(command: list[str]) -> None:
    line = one_line_error(run([*command, "--log-level", "verbose"]))
    assert line.endswith("argument --log-level: invalid log level 'verbose' (choose from debug, info, warning, "
                         "error) (see reapi-server --help)".replace("reapi-server", line.split(":")[0]))


def test_a_taken_grpc_port(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path / "s.toml", server_config(tmp_path, server={"listen": f"127.0.0.1:{taken_port}"}))
    line = one_line_error(run([*SERVER, "--config", str(config)]))
    assert line == (f"reapi-server: cannot start: cannot listen on 127.0.0.1:{taken_port} for gRPC: the address is "
                    "already in use (another reapi-server, or another program, holds the port)")


def test_a_taken_http_port(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path / "s.toml", server_config(tmp_path))
    line = one_line_error(run([*SERVER, "--config", str(config), "--http-listen", f"127.0.0.1:{taken_port}"]))
    assert line == (f"reapi-server: cannot start: cannot listen on 127.0.0.1:{taken_port} for HTTP (metrics and "
                    "console): the address is already in use (another reapi-server, or another program, holds the port)")


def test_a_taken_worker_metrics_port(tmp_path: Path, taken_port: int) -> None:
    line = one_line_error(run([*WORKER, "--server", "grpc://127.0.0.1:1", "--cache-dir", str(tmp_path / "c"),
                               "--work-dir", str(tmp_path / "w"), "--http-listen", f"127.0.0.1:{taken_port}"]))
    assert line == (f"reapi-worker: cannot start: cannot listen on 127.0.0.1:{taken_port} for HTTP (metrics): "
                    "the address is already in use")


def test_a_store_directory_in_use_names_the_process(tmp_path: Path) -> None:
    with reapi_server_process(tmp_path / "first", server_config(tmp_path / "first")) as first:
        second = write_config(tmp_path / "second.toml", server_config(tmp_path / "first"))
        line = one_line_error(run([*SERVER, "--config", str(second)]))
        assert line.startswith("reapi-server: cannot start: packed store 'cas-small': "), line
        assert f"is already in use by another process (pid {first.process.pid})" in line, line


@pytest.mark.parametrize("case", ["missing", "directory", "not toml"])
def test_an_unreadable_config(tmp_path: Path, case: str) -> None:
    path = tmp_path / "server.toml"
    if case == "directory":
        path.mkdir()
    elif case == "not toml":
        path.write_text("[server\n")
    line = one_line_error(run([*SERVER, "--config", str(path)]))
    assert line.startswith(f"reapi-server: configuration error: {path}: "), line
    expected = {"missing": "cannot read it: No such file or directory", "directory": "cannot read it: Is a directory",
                "not toml": "Expected ']' at the end of a table declaration"}[case]
    assert expected in line
