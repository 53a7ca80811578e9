"""The periodic INFO summary: requests, errors, hit rate, executions, queue and workers."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server import activity_log
from server.activity_log import report_forever
from server.metrics.totals import Totals
from tests.server.client import memory_stores
from tests.support.servers import channel_to, config_for, running_server
from tests.support.waiting import until

GUARD_S = 30.0  # only a reporter that never starts comes near it


class Intervals:
    """Stands in for ``asyncio`` in server.activity_log: each of the reporter's sleeps
    ends when the test says, so the interval ends after the test's requests however
    slow the machine (with real 0.2 s sleeps, a loaded one split them over two lines)."""

    def __init__(self) -> None:
        self.asleep = asyncio.Event()
        self._ended = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asleep.set()
        await self._ended.wait()
        self._ended.clear()
        self.asleep.clear()

    def end_one(self) -> None:
        self._ended.set()


async def test_a_summary_line_per_interval_with_activity(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    intervals = Intervals()
    monkeypatch.setattr(activity_log, "asyncio", intervals)
    config = config_for(stores=memory_stores(), http_listen="127.0.0.1:0")
    async with running_server(config) as server, channel_to(server) as channel:
        caplog.set_level(logging.INFO, logger="reapi.server.activity")
        reporter = asyncio.create_task(report_forever(server, interval=0.2))
        try:
            await asyncio.wait_for(intervals.asleep.wait(), GUARD_S)  # the interval has begun
            ac = re_grpc.ActionCacheStub(channel)
            request = re_pb2.GetActionResultRequest(action_digest=re_pb2.Digest(hash="a" * 64, size_bytes=1))
            metrics = server.metrics
            assert metrics is not None
            counted = Totals.read(metrics).requests
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await ac.GetActionResult(request)
            # The server counts a request as its call ends, which may be just after the client has the answer.
            await until(lambda: Totals.read(metrics).requests >= counted + 3, "the three requests counted")
            intervals.end_one()
            await until(lambda: any("activity in the last" in r.message for r in caplog.records), "the summary line")
        finally:
            reporter.cancel()
        line = next(r.message for r in caplog.records if "activity in the last" in r.message)
        assert "3 requests (0 errors)" in line, line
        assert "action cache 0 hits / 3 misses (0% hits)" in line, line
        assert "now 0 queued, 0 workers" in line, line


async def test_client_errors_are_logged_at_info_with_the_tool_and_invocation(
        caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(config_for(stores=memory_stores())) as server, channel_to(server) as channel:
        caplog.set_level(logging.INFO, logger="reapi.server")
        metadata = re_pb2.RequestMetadata(tool_details=re_pb2.ToolDetails(tool_name="bazel", tool_version="7.1"),
                                          tool_invocation_id="inv-42", target_id="//app:bin")
        cas = re_grpc.ContentAddressableStorageStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await cas.FindMissingBlobs(
                re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash="xyz", size_bytes=1)]),
                metadata=(("build.bazel.remote.execution.v2.requestmetadata-bin", metadata.SerializeToString()),))
        [line] = [r for r in caplog.records if "FindMissingBlobs answered" in r.message]
        assert line.levelno == logging.INFO
        assert "INVALID_ARGUMENT" in line.message or "invalid" in line.message.lower()
        assert line.message.endswith("(to bazel 7.1, invocation inv-42, target //app:bin)"), line.message
