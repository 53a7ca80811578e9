"""Fixtures for the execution service tests: a real server with memory stores and a
fake clock, a channel, an action builder on its CAS, and helpers to read Execute.

Every test runs once per scheduler state in ``SCHEDULER_STATES``: the tests drive
the gRPC surface and ``tick()``, and ask the state (never its internals) what they
check, so a new state (Redis) joins by adding its factory there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from server.app import ReapiServer, start_server
from server.config import WILDCARD_INSTANCE, InstanceConfig, ServerConfig
from server.scheduler.policy.scheduler import SchedulingPolicy
from server.scheduler.state.interface import StateFactory
from server.scheduler.state.memory.state import memory_state
from server.scheduler.state.redis.factory import redis_state
from tests.support.actions import ActionBuilder, BuiltAction
from tests.support.fake_clock import FakeClock
from tests.support.test_bot import TestBot

# Long enough that nothing in a test times out by accident; tests that need a
# timeout or an expiry set it, or move the fake clock.
TEST_EXECUTION = {
    "worker_grace": 3600,
    "bot_long_poll_timeout": 10,
    "bot_session_timeout": 60,
    "tick_interval": 3600,  # tests call tick() themselves, after moving the clock
}


def _redis_state(request: pytest.FixtureRequest) -> StateFactory:
    """A Redis state on the session's redis-server, under a key prefix of its own."""
    return redis_state(str(request.getfixturevalue("redis_url")), key_prefix=f"test:{uuid.uuid4().hex}:")


# Each scheduler state the tests run against, by the name pytest shows: a factory per test.
SCHEDULER_STATES: dict[str, Callable[[pytest.FixtureRequest], StateFactory]] = {
    "memory": lambda request: memory_state,
    "redis": _redis_state,
}


def memory_config(**execution: Any) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0",
        stores={"mem": {"type": "memory"}, "cas": {"type": "verify", "inner": "mem"}, "ac": {"type": "memory"}},
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
        raw={"execution": {**TEST_EXECUTION, **execution}},
    )


class ExecEnv:
    """A running server plus what tests need to drive it."""

    def __init__(self, server: ReapiServer, channel: grpc.aio.Channel, clock: FakeClock) -> None:
        self.server = server
        self.channel = channel
        self.clock = clock
        self.actions = ActionBuilder(server.instances.get("").cas)
        self.execution = re_grpc.ExecutionStub(channel)
        self._bots = 0

    @property
    def scheduler(self) -> SchedulingPolicy:
        assert self.server.execution is not None
        return self.server.execution.scheduler

    async def queued(self) -> int:
        return await self.scheduler.state.queued_count()

    async def operation_count(self) -> int:
        return await self.scheduler.state.operation_count()

    async def holds(self, bot: TestBot) -> bool:
        """Whether the bot's UpdateBotSession call is held, waiting for work."""
        session = await self.scheduler.state.session(bot.name)
        return session is not None and session.holding

    def bot(self, **kwargs: Any) -> TestBot:
        self._bots += 1
        kwargs.setdefault("bot_id", f"bot-{self._bots}")
        return TestBot(self.channel, **kwargs)

    async def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.scheduler.tick()

    def start(self, action: BuiltAction, **request: Any) -> grpc.aio.UnaryStreamCall:
        return self.execution.Execute(re_pb2.ExecuteRequest(action_digest=action.digest.to_proto(), **request))

    async def run(self, action: BuiltAction, **request: Any) -> list[lro_pb2.Operation]:
        return [op async for op in self.start(action, **request)]


def metadata_of(operation: lro_pb2.Operation) -> re_pb2.ExecuteOperationMetadata:
    metadata = re_pb2.ExecuteOperationMetadata()
    assert operation.metadata.Unpack(metadata)
    return metadata


def response_of(operation: lro_pb2.Operation) -> re_pb2.ExecuteResponse:
    assert operation.done and not operation.HasField("error")
    response = re_pb2.ExecuteResponse()
    assert operation.response.Unpack(response)
    return response


def stages_of(operations: list[lro_pb2.Operation]) -> list[int]:
    return [metadata_of(op).stage for op in operations]


async def drain(call: grpc.aio.UnaryStreamCall) -> list[lro_pb2.Operation]:
    """The rest of an Execute/WaitExecution stream (read() style, mixable with next_with_stage)."""
    out = []
    while (operation := await call.read()) is not grpc.aio.EOF:
        out.append(operation)
    return out


async def next_with_stage(call: grpc.aio.UnaryStreamCall, stage: int) -> lro_pb2.Operation:
    """Read the Execute stream until an Operation at ``stage``."""
    while True:
        operation = await call.read()
        assert operation is not grpc.aio.EOF, f"stream ended before stage {stage}"
        if metadata_of(operation).stage == stage:
            return operation


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(SCHEDULER_STATES))
def scheduler_state(request: pytest.FixtureRequest) -> StateFactory:
    return SCHEDULER_STATES[request.param](request)


@pytest.fixture
def make_env(clock: FakeClock, scheduler_state: StateFactory) -> Callable[..., Any]:
    """``async with make_env(max_retries=1) as env``: a server with [execution] overrides."""

    @asynccontextmanager
    async def factory(**execution: Any) -> AsyncIterator[ExecEnv]:
        server = await start_server(memory_config(**execution), clock=clock, scheduler_state=scheduler_state)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield ExecEnv(server, channel, clock)
        finally:
            await server.stop(grace=None)

    return factory


@pytest.fixture
async def env(make_env: Callable[..., Any]) -> AsyncIterator[ExecEnv]:
    async with make_env() as e:
        yield e


# -- several replicas over one Redis state (test_replicas.py, test_replica_drain.py) ------


@dataclass
class Replica:
    server: ReapiServer
    channel: grpc.aio.Channel

    @property
    def execution(self) -> re_grpc.ExecutionStub:
        return re_grpc.ExecutionStub(self.channel)

    @property
    def operations(self) -> lro_grpc.OperationsStub:
        return lro_grpc.OperationsStub(self.channel)

    @property
    def bytestream(self) -> bs_grpc.ByteStreamStub:
        return bs_grpc.ByteStreamStub(self.channel)


def shared_config(redis_url: str, prefix: str, **execution: Any) -> ServerConfig:
    redis = {"type": "redis", "url": redis_url}
    return ServerConfig(
        listen="127.0.0.1:0",
        stores={
            "blobs": {**redis, "key_prefix": f"{prefix}cas:"},
            "cas": {"type": "verify", "inner": "blobs"},
            "ac": {**redis, "key_prefix": f"{prefix}ac:"},
        },
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
        raw={"execution": {**TEST_EXECUTION, "state": "redis", "redis_url": redis_url,
                           "redis_key_prefix": f"{prefix}scheduler:", **execution}},
    )


@asynccontextmanager
async def replica_set(redis_url: str, clock: FakeClock, count: int, prefix: str,
                      **execution: Any) -> AsyncIterator[list[Replica]]:
    """``count`` in-process replicas sharing one Redis state (keys under ``prefix``,
    ``execution`` settings as in shared_config), each with a channel to it."""
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(count):
            server = await start_server(shared_config(redis_url, prefix, **execution), clock=clock)
            stack.push_async_callback(server.stop, None)
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            out.append(Replica(server, channel))
        yield out


@pytest.fixture
async def replicas(redis_url: str, clock: FakeClock) -> AsyncIterator[list[Replica]]:
    async with replica_set(redis_url, clock, 3, f"replicas:{uuid.uuid4().hex}:") as out:
        yield out
