"""Server replicas as real processes around one redis-server, for tests that kill them.

    with ReplicaSet(tmp_path, redis, count=3) as replicas:
        channel = replicas.channel(0)      # grpc.aio channel to replica 0
        replicas.kill(0)                   # kill -9
        replicas.start(0)                  # again, on the same port

Every replica runs ``state = "redis"`` and keeps its CAS and action cache in the
same Redis (``redis`` stores), so all of them serve the same data; each listens on
its own fixed port so a restart comes back where clients look for it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from server.config import WILDCARD_INSTANCE
from tests.support.processes import free_port
from tests.support.redis_process import RedisProcess
from tests.support.server_process import ServerProcess, reapi_server_process

# Short timeouts so that expiry happens within a test's patience.
FAST_EXECUTION = {
    "bot_session_timeout": "3s",
    "bot_long_poll_timeout": "2s",
    "tick_interval": "0.2s",
    "worker_grace": "1h",
    "progress_interval": "1s",
}


def replica_config(redis_url: str, listen: str, **execution: Any) -> dict[str, Any]:
    redis = {"type": "redis", "url": redis_url, "timeout": "1s"}
    return {
        "server": {"listen": listen},
        "stores": {
            "blobs": {**redis, "key_prefix": "test:cas:"},
            "cas": {"type": "verify", "inner": "blobs"},
            "ac": {**redis, "key_prefix": "test:ac:"},
        },
        "instances": [{"name": WILDCARD_INSTANCE, "cas": "cas", "ac": "ac"}],
        "execution": {**FAST_EXECUTION, "state": "redis", "redis_url": redis_url, "redis_timeout": "1s",
                      **execution},
    }


class ReplicaSet:
    def __init__(self, workdir: Path, redis: RedisProcess, count: int = 3, **execution: Any) -> None:
        self.workdir = workdir
        self.redis = redis
        self.listen = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.execution = execution
        self.running: dict[int, tuple[ExitStack, ServerProcess]] = {}
        self._channels: list[grpc.aio.Channel] = []

    def __enter__(self) -> ReplicaSet:
        for index in range(len(self.listen)):
            self.start(index)
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        for stack, _ in self.running.values():
            stack.close()

    def start(self, index: int) -> None:
        stack = ExitStack()
        config = replica_config(self.redis.url, self.listen[index], **self.execution)
        process = stack.enter_context(reapi_server_process(self.workdir / f"replica-{index}", config))
        self.running[index] = (stack, process)

    def kill(self, index: int) -> None:
        stack, process = self.running.pop(index)
        process.kill()
        stack.close()

    def address(self, index: int) -> str:
        return self.listen[index]

    def channel(self, index: int) -> grpc.aio.Channel:
        """A new channel to replica ``index`` (closed by ``aclose_channels``)."""
        channel = grpc.aio.insecure_channel(self.listen[index])
        self._channels.append(channel)
        return channel

    async def aclose_channels(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()

    def problems(self) -> list[str]:
        return [line for _, process in self.running.values() for line in process.problems()]
