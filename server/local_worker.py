"""The zero-config server's own worker: a ``reapi-worker`` process next to it.

So that one command (``reapi-server``, ``make run``) gives a complete remote
execution service, the server starts a worker process pointed at its own port.
It is a subprocess, never an import: the server and the worker only meet over gRPC.
On by default only without a config file; with one, ``[local_worker] enabled =
true`` asks for it (docs/CONFIG.md). Tests that start servers pass a config file or
start the server in-process, so they never get a worker they did not ask for.

The worker is restarted (with backoff) if it dies, and told to stop (SIGTERM, so
it hands back what it runs) before the server stops; ``--exit-with-parent`` makes
it stop by itself if the server dies without telling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from cas.config import AtLeast, read_table
from server.auth.local_credential import LocalWorkerCredential

log = logging.getLogger("reapi.server.local_worker")

_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


@dataclass(frozen=True)
class LocalWorkerConfig:
    """``[local_worker]``."""

    enabled: bool
    """Start the local worker; default true only without a config file."""
    concurrency: Annotated[int, AtLeast(1)] | None = None
    """Actions it runs at once; None: the worker's default (CPU count)."""
    args: tuple[str, ...] = field(default=())
    """More reapi-worker arguments."""


def parse_local_worker(section: Mapping[str, Any], zero_config: bool) -> LocalWorkerConfig:
    """The ``[local_worker]`` table; ``enabled`` defaults to ``zero_config``."""
    return read_table(LocalWorkerConfig, section, "[local_worker]", defaults={"enabled": zero_config})


def worker_target(listen_host: str, port: int) -> str:
    """Where a worker on this machine reaches a server listening on ``listen_host:port``."""
    host = "127.0.0.1" if listen_host in _ANY_ADDRESS else listen_host
    return f"grpc://{host}:{port}"


def worker_command(config: LocalWorkerConfig, server_url: str, log_level: str,
                   credential_args: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "worker.app", "--server", server_url, "--log-level", log_level,
               "--exit-with-parent", *credential_args]
    if config.concurrency is not None:
        command += ["--concurrency", str(config.concurrency)]
    return command + list(config.args)


class LocalWorker:
    """Keeps one worker process running until ``stop``."""

    def __init__(self, command: Sequence[str], stop_timeout: float = 30.0,
                 restart_delays: Sequence[float] = (1.0, 2.0, 5.0, 10.0, 30.0)) -> None:
        self.command = list(command)
        self.stop_timeout = stop_timeout
        self.restart_delays = restart_delays
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.starts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="reapi-local-worker")

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
            self.starts += 1
            log.info("local worker started (pid %d)", self.process.pid)
            code = await self.process.wait()
            if self._stopping.is_set():
                return
            delay = self.restart_delays[min(failures, len(self.restart_delays) - 1)]
            failures += 1
            log.error("local worker exited with %s; restarting it in %.0f s", code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self) -> None:
        """SIGTERM (the worker finishes or hands back its actions), SIGKILL after ``stop_timeout``."""
        self._stopping.set()
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("local worker did not stop in %.0f s; killing it", self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def start_local_worker(config: LocalWorkerConfig, execution_enabled: bool, listen_host: str, port: int,
                       log_level: str, credential: LocalWorkerCredential | None = None) -> LocalWorker | None:
    """Start the worker if configured (and if this server runs remote execution at all).

    ``credential``: with authentication or TLS on, the token and socket the server made for it."""
    if not config.enabled:
        return None
    if not execution_enabled:
        log.warning("[local_worker] is enabled but [execution] is not; no local worker started")
        return None
    target = worker_target(listen_host, port)
    credential_args: list[str] = []
    if credential is not None:
        target = credential.socket_address or target
        credential_args = credential.worker_args()
    worker = LocalWorker(worker_command(config, target, log_level, credential_args))
    worker.start()
    return worker
