"""A real server process and thousands of ByteStream uploads that never finish: the
memory they hold is bounded by ``[server] idle_upload_memory``, and given back."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from cas.digest import Digest
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from tests.support.server_process import reapi_server_process, server_config

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) >> 10


def test_never_finished_uploads_are_bounded_by_their_memory_budget(tmp_path: Path) -> None:
    config = server_config(tmp_path / "server", server={"idle_upload_memory": "32MiB"})
    with reapi_server_process(tmp_path / "server", config) as server:
        channel = grpc.insecure_channel(server.address)
        bytestream = bs_grpc.ByteStreamStub(channel)
        start = rss_mib(server.process.pid)

        def abandon(_: int) -> grpc.StatusCode:
            """Half of a 400 KB blob, then the call ends without finish_write."""
            blob = os.urandom(400_000)
            digest = Digest.of(blob)
            name = f"uploads/{os.urandom(8).hex()}/blobs/{digest.hash}/{digest.size_bytes}"

            def requests() -> Iterator[bs_pb2.WriteRequest]:
                yield bs_pb2.WriteRequest(resource_name=name, write_offset=0, data=blob[:200_000])
            try:
                bytestream.Write(requests())
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(8) as pool:  # 2,000 x 200 KB: 400 MB if all were kept
            codes = set(pool.map(abandon, range(2000)))
        assert codes == {INVALID_ARGUMENT}  # "ended without finish_write: ask QueryWriteStatus and resume"
        # What the dropped uploads held goes back to the system (a moment after the last drop).
        deadline = time.monotonic() + 30
        while (grown := rss_mib(server.process.pid) - start) >= 32 + 64 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert grown < 32 + 64, f"the server grew by {grown} MiB"
        channel.close()
        assert not server.problems(), server.problems()
