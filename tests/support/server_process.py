"""Run ``reapi-server`` as a real process, the way users and build tools meet it.

    with reapi_server_process(tmp_path / "server") as server:
        bazel.test("//...", flags=remote_cache_flags(server.url))
        assert not server.problems()

The server listens on 127.0.0.1 port 0 (the kernel picks a free port, no race) and
prints "reapi-server listening on HOST:PORT", which is awaited. By default it runs
the zero-config stores (disk CAS and AC) under ``workdir``; pass ``config`` for
anything else (``server_config`` builds the usual shape). Its output goes to
``workdir/server.log``; ``problems()`` lists error lines and tracebacks, so a test
can assert that a real client caused none. On leaving the block the server gets
SIGTERM; if it died on its own during the block, that is raised as a failure.

Worker processes for remote execution can be run the same way with LoggedProcess.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import WILDCARD_INSTANCE, default_stores
from tests.support import toml_writer
from tests.support.logged_process import LoggedProcess

LISTENING = re.compile(r"reapi-server listening on (\S+:\d+)")  # not the allow_insecure warning's "listening on ADDR:0"
CONSOLE = re.compile(r"console: (http://\S+)/ ")
STARTUP_TIMEOUT_S = 30.0


def server_config(
    workdir: Path,
    *,
    stores: Mapping[str, Mapping[str, Any]] | None = None,
    instances: Sequence[Mapping[str, Any]] | None = None,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """A config dict: listen on a free port; default stores under ``workdir/data``."""
    server = {"listen": "127.0.0.1:0", **sections.pop("server", {})}
    return {
        "server": server,
        "stores": dict(stores) if stores is not None else default_stores(workdir / "data"),
        "instances": list(instances) if instances else [{"name": WILDCARD_INSTANCE, "cas": "cas", "ac": "ac"}],
        **sections,
    }


@dataclass
class ServerProcess:
    process: LoggedProcess
    address: str  # HOST:PORT
    config_path: Path
    killed: bool = False  # by kill(): its exit is the test's doing, not a failure

    def kill(self) -> None:
        """SIGKILL the server, as a crashed machine would; wait until it is gone."""
        self.killed = True
        self.process.kill()

    @property
    def url(self) -> str:
        """The address as Bazel wants it: grpc://HOST:PORT."""
        return f"grpc://{self.address}"

    def problems(self) -> list[str]:
        return self.process.problems()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def console_url(self) -> str:
        """The HTTP base URL of metrics and the console (the config must set http_listen)."""
        return self.process.wait_for_log(CONSOLE, STARTUP_TIMEOUT_S).group(1)


@contextmanager
def reapi_server_process(
    workdir: Path,
    config: Mapping[str, Any] | None = None,
    *,
    log_level: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Start ``python -m server.app --config workdir/server.toml``; stop it on exit.

    ``log_level`` defaults to $REAPI_LOG_LEVEL or INFO: run the tests with
    REAPI_LOG_LEVEL=DEBUG to see in server.log what a client sent.
    """
    log_level = log_level or os.environ.get("REAPI_LOG_LEVEL", "INFO")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "server.toml"
    config_path.write_text(toml_writer.dumps(config if config is not None else server_config(workdir)))
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", "REAPI_LOG_LEVEL": log_level, **(env or {})}
    process = LoggedProcess(
        "reapi-server",
        [sys.executable, "-m", "server.app", "--config", str(config_path), "--log-level", log_level],
        workdir / "server.log",
        env=process_env,
    )
    process.start()
    try:
        address = process.wait_for_log(LISTENING, STARTUP_TIMEOUT_S).group(1)
        server = ServerProcess(process, address, config_path)
        yield server
        died = process.exit_code
        if died is not None and not server.killed:
            raise RuntimeError(f"reapi-server died during the test with exit code {died}:\n{process.log_tail()}")
    finally:
        process.stop()
