"""/metrics of a real in-process server: the families are there and move as calls are made."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.app import start_server
from server.listen_errors import StartupError
from server.rpc_wrapping import registrar
from tests.server.client import memory_stores
from tests.support.metrics_scrape import Scrape, scrape
from tests.support.servers import channel_to, config_for, running_server

SERVER_FAMILIES = (
    "reapi_rpc_duration_seconds", "reapi_cas_bytes", "reapi_cas_blobs", "reapi_action_cache_lookups",
    "reapi_execution_stage_duration_seconds", "reapi_executions", "reapi_retries",
    "reapi_store_evicted_blob_age_seconds",
)


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


async def metrics_of(url: str) -> Scrape:
    return await asyncio.to_thread(scrape, f"{url}/metrics")


async def test_metrics_move_with_cas_and_action_cache_calls() -> None:
    config = config_for(stores=memory_stores(), http_listen="127.0.0.1:0")
    async with running_server(config) as server, channel_to(server) as channel:
        assert server.http is not None
        before = await metrics_of(server.http.url)
        assert set(SERVER_FAMILIES) <= set(before.families), sorted(before.families)

        cas = re_grpc.ContentAddressableStorageStub(channel)
        ac = re_grpc.ActionCacheStub(channel)
        blob = b"x" * 1000
        await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_of(blob), data=blob)]))
        await cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[digest_of(blob)]))
        action = digest_of(b"an action")
        with pytest.raises(grpc.aio.AioRpcError):
            await ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action))
        await ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(
            action_digest=action, action_result=re_pb2.ActionResult(exit_code=0)))
        await ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action))

        after = await metrics_of(server.http.url)
        assert after.value("reapi_cas_bytes_total", direction="write") == 1000
        assert after.value("reapi_cas_bytes_total", direction="read") == 1000
        assert after.value("reapi_cas_blobs_total", direction="write") == 1
        assert after.value("reapi_action_cache_lookups_total", result="miss") == 1
        assert after.value("reapi_action_cache_lookups_total", result="hit") == 1
        count = "reapi_rpc_duration_seconds_count"
        assert after.value(count, method="ActionCache/GetActionResult", code="NOT_FOUND") == 1
        assert after.value(count, method="ActionCache/GetActionResult", code="OK") == 1
        assert after.value(count, method="ContentAddressableStorage/BatchUpdateBlobs", code="OK") == 1
        # Bounded labels: methods the server serves, codes gRPC defines.
        assert after.labels_of(count, "code") <= {c.name for c in grpc.StatusCode}


async def test_streaming_calls_are_timed_with_their_final_code(tmp_path: Path) -> None:
    config = config_for(stores=memory_stores(), http_listen="127.0.0.1:0")
    async with running_server(config) as server, channel_to(server) as channel:
        assert server.http is not None
        cas = re_grpc.ContentAddressableStorageStub(channel)
        missing_root = digest_of(b"no such directory")
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in cas.GetTree(re_pb2.GetTreeRequest(root_digest=missing_root)):
                pass
        after = await metrics_of(server.http.url)
        codes = {dict(ls)["code"] for (n, ls), value in after.samples.items()
                 if n == "reapi_rpc_duration_seconds_count" and value > 0
                 and dict(ls).get("method") == "ContentAddressableStorage/GetTree"}
        assert codes == {"NOT_FOUND"}


async def test_without_http_there_are_no_metrics_and_nothing_wraps_the_handlers() -> None:
    async with running_server(config_for(stores=memory_stores())) as server:
        assert server.metrics is None and server.http is None
        sentinel = object()
        assert registrar(sentinel, []) is sentinel  # type: ignore[arg-type]  # services go straight to the server


async def test_a_taken_http_port_is_one_line_and_closes_what_was_opened() -> None:
    async with running_server(config_for(stores=memory_stores(), http_listen="127.0.0.1:0")) as first:
        assert first.http is not None
        with pytest.raises(StartupError) as info:
            await start_server(config_for(stores=memory_stores(), http_listen=first.http.address))
        assert str(info.value) == (f"cannot listen on {first.http.address} for HTTP (metrics and console): the address "
                                   "is already in use (another reapi-server, or another program, holds the port)")


async def test_executions_feed_stage_durations_outcomes_and_farm_gauges(tmp_path: Path) -> None:
    from tests.worker.actions import ActionClient
    from tests.worker.conftest import execution_config, worker_in_process

    config = execution_config()
    config.http_listen = "127.0.0.1:0"
    async with (running_server(config) as server, channel_to(server) as channel,
                worker_in_process(server, tmp_path / "worker")):
        assert server.http is not None
        client = ActionClient(channel)
        assert (await client.run(["true"])).result.exit_code == 0
        assert (await client.run(["sh", "-c", "exit 3"])).result.exit_code == 3
        after = await metrics_of(server.http.url)
        assert after.value("reapi_executions_total", outcome="ok") == 1
        assert after.value("reapi_executions_total", outcome="exit_nonzero") == 1
        for stage in ("queued", "input_fetch", "execution", "output_upload"):
            assert after.value("reapi_execution_stage_duration_seconds_count", stage=stage) == 2, stage
        assert after.total("reapi_workers") == 1
        assert after.total("reapi_farm_slots") == 2
        assert after.value("reapi_executing_actions") == 0
        assert "reapi_queued_actions" in after.families


async def test_store_sizes_evictions_and_the_age_of_evicted_blobs(tmp_path: Path) -> None:
    stores = {
        "cas-disk": {"type": "disk", "path": str(tmp_path / "cas"), "max_size": "100KiB"},
        "cas": {"type": "verify", "inner": "cas-disk"},
        "ac": {"type": "memory", "max_size": "1MiB"},
    }
    async with running_server(config_for(stores=stores, http_listen="127.0.0.1:0")) as server, \
            channel_to(server) as channel:
        assert server.http is not None
        cas = re_grpc.ContentAddressableStorageStub(channel)
        for i in range(12):
            blob = bytes([i]) * 20_000
            await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
                requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_of(blob), data=blob)]))
        after = await metrics_of(server.http.url)
        evicted = after.value("reapi_store_evictions_total", store="cas-disk")
        assert evicted >= 7
        assert after.value("reapi_store_evicted_blob_age_seconds_count", store="cas-disk") == evicted
        assert 0 < after.value("reapi_store_size_bytes", store="cas-disk") <= 100 * 1024
        assert after.value("reapi_store_capacity_bytes", store="cas-disk") == 100 * 1024
        assert after.value("reapi_store_evictions_total", store="ac") == 0


async def test_a_packed_store_reports_the_age_of_the_segments_it_evicts(tmp_path: Path) -> None:
    stores = {
        "cas-packed": {"type": "packed", "path": str(tmp_path / "cas"), "max_size": "1MiB", "segment_size": "64KiB",
                       "max_value_size": "32KiB"},
        "cas": {"type": "verify", "inner": "cas-packed"},
        "ac": {"type": "memory", "max_size": "1MiB"},
    }
    async with running_server(config_for(stores=stores, http_listen="127.0.0.1:0")) as server, \
            channel_to(server) as channel:
        assert server.http is not None
        cas = re_grpc.ContentAddressableStorageStub(channel)
        for i in range(120):
            blob = i.to_bytes(2, "big") * 10_000
            await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
                requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_of(blob), data=blob)]))
        packed = server.stores["cas-packed"]
        await packed.drain()  # type: ignore[attr-defined]
        after = await metrics_of(server.http.url)
        evicted = after.value("reapi_store_evictions_total", store="cas-packed")
        assert evicted > 0
        assert after.value("reapi_store_evicted_blob_age_seconds_count", store="cas-packed") == evicted
