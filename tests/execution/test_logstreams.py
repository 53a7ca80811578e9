"""Live log streams over real gRPC: a client follows an action's stdout while the
bot writes it, through the same ByteStream service as blobs."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2 as logstream_pb2
from remote_apis_protos.build.bazel.remote.logstream.v1 import remote_logstream_pb2_grpc as logstream_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from tests.execution.conftest import ExecEnv, drain, metadata_of, next_with_stage

EXECUTING = 3
GUARD = 30


async def test_a_live_log_stream_is_read_while_it_is_being_written(env: ExecEnv) -> None:
    action = await env.actions.build(["make"])
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    executing = metadata_of(await next_with_stage(call, EXECUTING))
    assert executing.stdout_stream_name and executing.stderr_stream_name
    assert lease.metadata.stdout_stream_name.startswith(executing.stdout_stream_name + "/write/")
    assert lease.metadata.stderr_stream_name.startswith(executing.stderr_stream_name + "/write/")

    bytestream = bs_grpc.ByteStreamStub(env.channel)
    reader = bytestream.Read(bs_pb2.ReadRequest(resource_name=executing.stdout_stream_name))
    write_name = lease.metadata.stdout_stream_name
    first = await bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=write_name, data=b"compiling...\n")]))
    assert first.committed_size == 13
    assert (await asyncio.wait_for(reader.read(), GUARD)).data == b"compiling...\n"  # before the rest exists
    status = await bytestream.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(resource_name=write_name))
    assert (status.committed_size, status.complete) == (13, False)
    await bytestream.Write(iter([
        bs_pb2.WriteRequest(resource_name=write_name, write_offset=13, data=b"linking\n"),
        bs_pb2.WriteRequest(write_offset=21, data=b"done\n", finish_write=True),
    ]))
    rest = b""
    while (chunk := await reader.read()) is not grpc.aio.EOF:
        rest += chunk.data
    assert rest == b"linking\ndone\n"

    # A late reader gets the whole stream at once, from any offset.
    late = bytestream.Read(bs_pb2.ReadRequest(resource_name=executing.stdout_stream_name, read_offset=13))
    assert b"".join([r.data async for r in late]) == b"linking\ndone\n"
    bot.complete(lease.id)
    await bot.quick_poll()
    await drain(call)


async def test_streams_close_when_the_lease_completes_and_are_dropped_later(env: ExecEnv) -> None:
    action = await env.actions.build()
    bot = env.bot()
    await bot.create()
    call = env.start(action)
    [lease] = await bot.poll()
    stderr = metadata_of(await next_with_stage(call, EXECUTING)).stderr_stream_name
    bytestream = bs_grpc.ByteStreamStub(env.channel)
    reader = bytestream.Read(bs_pb2.ReadRequest(resource_name=stderr))
    await bot.write_log(lease.metadata.stderr_stream_name, [b"warning\n"], finish=False)
    assert (await reader.read()).data == b"warning\n"
    bot.complete(lease.id)  # the bot never finished its stream: completing the lease does
    await bot.quick_poll()
    assert await asyncio.wait_for(reader.read(), GUARD) is grpc.aio.EOF
    await drain(call)
    env.clock.advance(601)
    env.server.execution.logstreams.tick()  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in bytestream.Read(bs_pb2.ReadRequest(resource_name=stderr)):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reading_a_write_name_and_writing_a_read_name_are_invalid_argument(env: ExecEnv) -> None:
    stream = await logstream_grpc.LogStreamServiceStub(env.channel).CreateLogStream(
        logstream_pb2.CreateLogStreamRequest(parent="tools/build-42")
    )
    assert stream.name.startswith("tools/build-42/logstreams/")
    assert stream.write_resource_name.startswith(stream.name + "/write/")
    bytestream = bs_grpc.ByteStreamStub(env.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in bytestream.Read(bs_pb2.ReadRequest(resource_name=stream.write_resource_name)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "write resource name" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=stream.name, data=b"x")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_write_at_the_wrong_offset_is_invalid_argument_and_keeps_the_data(env: ExecEnv) -> None:
    stream = await logstream_grpc.LogStreamServiceStub(env.channel).CreateLogStream(
        logstream_pb2.CreateLogStreamRequest(parent="p")
    )
    bytestream = bs_grpc.ByteStreamStub(env.channel)
    await bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=stream.write_resource_name, data=b"abc")]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await bytestream.Write(iter([
            bs_pb2.WriteRequest(resource_name=stream.write_resource_name, write_offset=1, data=b"zz")
        ]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match the 3 bytes already written" in caught.value.details()
    await bytestream.Write(iter([
        bs_pb2.WriteRequest(resource_name=stream.write_resource_name, write_offset=3, finish_write=True)
    ]))
    assert b"".join([r.data async for r in bytestream.Read(bs_pb2.ReadRequest(resource_name=stream.name))]) == b"abc"


async def test_unknown_log_streams_are_not_found_and_blobs_still_work(env: ExecEnv) -> None:
    bytestream = bs_grpc.ByteStreamStub(env.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in bytestream.Read(bs_pb2.ReadRequest(resource_name="x/logstreams/" + "0" * 32)):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    digest = await env.actions.put(b"plain blob")
    name = f"blobs/{digest.hash}/{digest.size_bytes}"
    assert b"".join([r.data async for r in bytestream.Read(bs_pb2.ReadRequest(resource_name=name))]) == b"plain blob"
