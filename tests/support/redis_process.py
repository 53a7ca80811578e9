"""A redis-server a test can pause, kill and restart on the same port.

    redis = RedisProcess(tmp_path / "redis", appendonly=True)
    redis.start()
    redis.pause()      # SIGSTOP: connections stay open, nothing answers (a hung host)
    redis.resume()     # SIGCONT
    redis.kill()       # SIGKILL
    redis.start()      # same port, same directory (with AOF: same data)
    redis.stop()

Sentinels for the same test live here too (``SentinelProcess``): a redis-server in
sentinel mode watching one primary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.processes import free_port, wait_for_port


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run deploy/bootstrap.sh --test")
    return binary


class RedisProcess:
    """One redis-server on 127.0.0.1 and a fixed port, in ``workdir``."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, port: int | None = None,
                 extra: Sequence[str] = (), appendfsync: str = "always") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # "always" for tests that kill it; "everysec" as deployed
        self.extra = list(extra)
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def args(self) -> list[str]:
        return [
            _binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--dir", str(self.workdir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
            *self.extra,
        ]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:
            self.popen = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.popen)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.popen is not None
        self.resume()  # a stopped process still dies on SIGKILL, but be plain about it
        self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.resume()
            self.popen.terminate()
            self.popen.wait(10)


@asynccontextmanager
async def running_redis(workdir: Path, *, appendonly: bool = False) -> AsyncIterator[RedisProcess]:
    """A redis-server of the test's own (to pause, kill or restart), stopped at the end."""
    process = RedisProcess(workdir, appendonly=appendonly)
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        process.stop()


class SentinelProcess(RedisProcess):
    """redis-server --sentinel watching the primary ``service`` at ``primary_port``."""

    def __init__(self, workdir: Path, primary_port: int, service: str = "reapi", down_after_ms: int = 1000) -> None:
        super().__init__(workdir)
        self.primary_port = primary_port
        self.service = service
        self.down_after_ms = down_after_ms

    def args(self) -> list[str]:
        config = self.workdir / "sentinel.conf"  # sentinel rewrites its config file
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        return [_binary(), str(config), "--sentinel"]
