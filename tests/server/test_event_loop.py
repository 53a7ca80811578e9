"""A real server process on each event loop it offers, answering a client."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.resource_names import download_name
from tests.support.server_process import reapi_server_process, server_config

MEMORY = {"cas": {"type": "memory"}, "ac": {"type": "memory"}}


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_server_serves_on_the_configured_event_loop(tmp_path: Path, loop: str) -> None:
    config = server_config(tmp_path, stores=MEMORY, server={"event_loop": loop}, execution={"enabled": False})
    data = b"x" * (3 << 20)  # several ByteStream read chunks
    digest = Digest.of(data)
    with reapi_server_process(tmp_path, config) as server, grpc.insecure_channel(server.address) as channel:
        cas = re_grpc.ContentAddressableStorageStub(channel)
        request = re_pb2.BatchUpdateBlobsRequest(requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest.to_proto(), data=data)])
        assert [r.status.code for r in cas.BatchUpdateBlobs(request).responses] == [0]
        read = bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=download_name("", digest)))
        assert b"".join(r.data for r in read) == data
        assert f"event loop: {loop}" in server.process.log_text()
        assert not server.problems()
