"""LogTail against a real server's LogStreams: whatever moment ``finish`` comes at,
a reader gets every byte of the file, in order, and the stream ends exactly there.

A gate in front of the real ByteStream call holds chosen writes open, so ``finish``
can be called while the follower is inside ``await call.write(...)`` (before the
first message, mid-stream) as well as between writes and after the last one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cas.store import READ_CHUNK_SIZE
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2 as logstream_pb2
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2_grpc as logstream_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.app import start_server
from tests.execution.conftest import memory_config
from worker.logs import LogTail

GUARD = 30
FAST = 0.01


class GatedCall:
    """A real client-streaming Write call whose ``write`` number ``hold_at`` waits for ``release``."""

    def __init__(self, call: Any, hold_at: int | None) -> None:
        self._call = call
        self._hold_at = hold_at
        self.writes = 0
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, request: bs_pb2.WriteRequest) -> None:
        self.writes += 1
        if self.writes == self._hold_at:
            self.held.set()
            await self.release.wait()
        await self._call.write(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __await__(self) -> Any:
        return self._call.__await__()


class GatedByteStream:
    def __init__(self, stub: bs_grpc.ByteStreamStub, hold_at: int | None) -> None:
        self._stub = stub
        self._hold_at = hold_at
        self.calls: list[GatedCall] = []

    def Write(self) -> GatedCall:  # noqa: N802 - the stub's method name
        call = GatedCall(self._stub.Write(), self._hold_at)
        self.calls.append(call)
        return call

    async def held(self) -> GatedCall:
        while not self.calls:
            await asyncio.sleep(FAST)
        call = self.calls[0]
        await asyncio.wait_for(call.held.wait(), GUARD)
        return call


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = await start_server(memory_config())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield channel
    finally:
        await server.stop(grace=None)


async def new_stream(channel: grpc.aio.Channel) -> logstream_pb2.LogStream:
    stub = logstream_grpc.LogStreamServiceStub(channel)
    return await stub.CreateLogStream(logstream_pb2.CreateLogStreamRequest(parent="actions/1"))


async def read_all(channel: grpc.aio.Channel, name: str) -> bytes:
    reader = bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=name))
    return b"".join([r.data async for r in reader])


def write_file(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def content(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


async def tail_and_finish(channel: grpc.aio.Channel, tmp_path: Path, data: bytes, hold_at: int | None,
                          interval: float) -> tuple[bytes, LogTail, GatedByteStream]:
    stream = await new_stream(channel)
    path = tmp_path / "stdout"
    write_file(path, data)
    gated = GatedByteStream(bs_grpc.ByteStreamStub(channel), hold_at)
    tail = LogTail(gated, stream.write_resource_name, path, interval)  # type: ignore[arg-type]
    tail.start()
    if hold_at is not None:
        call = await gated.held()
        finishing = asyncio.create_task(tail.finish())
        await asyncio.sleep(FAST * 5)  # finish() is now waiting on the held write
        assert not finishing.done()
        call.release.set()
        await asyncio.wait_for(finishing, GUARD)
    else:
        await asyncio.wait_for(tail.finish(), GUARD)
    return await asyncio.wait_for(read_all(channel, stream.name), GUARD), tail, gated


async def test_finish_before_the_follower_sent_anything_sends_it_all(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    data = content(5000)
    streamed, tail, _ = await tail_and_finish(channel, tmp_path, data, hold_at=None, interval=3600)
    assert streamed == data and tail.sent == len(data)


async def test_finish_during_the_first_write_keeps_the_resource_name_and_every_byte(
    channel: grpc.aio.Channel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = content(3000)
    streamed, _, gated = await tail_and_finish(channel, tmp_path, data, hold_at=1, interval=FAST)
    assert streamed == data
    assert len(gated.calls) == 1
    assert "stopped after" not in caplog.text


async def test_finish_mid_stream_keeps_every_byte(
    channel: grpc.aio.Channel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = content(3 * READ_CHUNK_SIZE + 12345, seed=3)
    streamed, _, _ = await tail_and_finish(channel, tmp_path, data, hold_at=2, interval=FAST)
    assert len(streamed) == len(data) and streamed == data
    assert "stopped after" not in caplog.text


async def test_finish_after_the_last_write_sends_only_what_is_new(
    channel: grpc.aio.Channel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await new_stream(channel)
    path = tmp_path / "stdout"
    first = content(2000)
    write_file(path, first)
    tail = LogTail(bs_grpc.ByteStreamStub(channel), stream.write_resource_name, path, FAST)
    tail.start()
    for _ in range(GUARD * 100):
        if tail.sent == len(first):
            break
        await asyncio.sleep(FAST)
    assert tail.sent == len(first)
    write_file(path, b"last line\n")
    await asyncio.wait_for(tail.finish(), GUARD)
    assert await read_all(channel, stream.name) == first + b"last line\n"
    assert "stopped after" not in caplog.text


async def test_finish_while_the_file_grows_under_a_busy_follower(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    """Many small appends, finish at a random-ish moment among them: the stream equals the file."""
    for round_ in range(5):
        stream = await new_stream(channel)
        path = tmp_path / f"stdout-{round_}"
        path.touch()
        tail = LogTail(bs_grpc.ByteStreamStub(channel), stream.write_resource_name, path, 0.001)
        tail.start()
        for i in range(20 + round_ * 7):
            write_file(path, f"line {i}\n".encode() * (i % 5 + 1))
            await asyncio.sleep(0.001 * (i % 3))
        await asyncio.wait_for(tail.finish(), GUARD)
        assert await read_all(channel, stream.name) == path.read_bytes()


async def test_an_empty_file_sends_nothing_and_finish_returns(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    stream = await new_stream(channel)
    path = tmp_path / "stdout"
    path.touch()
    gated = GatedByteStream(bs_grpc.ByteStreamStub(channel), None)
    tail = LogTail(gated, stream.write_resource_name, path, FAST)  # type: ignore[arg-type]
    tail.start()
    await asyncio.sleep(FAST * 3)
    await asyncio.wait_for(tail.finish(), GUARD)
    assert gated.calls == [] and tail.sent == 0
    assert os.path.getsize(path) == 0
