"""A real server process on a 64 MiB tmpfs filled past capacity: its memory stays flat
while writes fail, it restarts on the full disk (even after kill -9) and serves what it
has, and it takes writes again once space returns."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.config import default_stores
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.tmpfs_disk import tmpfs_disk

OK = grpc.StatusCode.OK.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
CHUNK = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_disk(tmp_path / "disk", "64m") as path:
        yield path


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) >> 10


class Client:
    def __init__(self, server: ServerProcess) -> None:
        self.channel = grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)

    def batch(self, blobs: list[bytes]) -> dict[Digest, int]:
        """Each blob's status code."""
        requests = [re_pb2.BatchUpdateBlobsRequest.Request(digest=Digest.of(b).to_proto(), data=b) for b in blobs]
        answer = self.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=requests))
        return {Digest.from_proto(r.digest): r.status.code for r in answer.responses}

    def write(self, blob: bytes) -> tuple[int, str]:
        """A ByteStream upload in 1 MiB messages: (code, message)."""
        digest = Digest.of(blob)
        name = f"uploads/{os.urandom(8).hex()}/blobs/{digest.hash}/{digest.size_bytes}"

        def requests() -> Iterator[bs_pb2.WriteRequest]:
            for offset in range(0, len(blob), CHUNK):
                yield bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                          data=blob[offset:offset + CHUNK], finish_write=offset + CHUNK >= len(blob))
        try:
            self.bytestream.Write(requests())
            return OK, ""
        except grpc.RpcError as exc:
            return exc.code().value[0], exc.details() or ""

    def read_small(self, digests: list[Digest]) -> dict[Digest, bytes]:
        found = {}
        for start in range(0, len(digests), 30):  # 3 MB a batch, under the server's 4 MiB
            request = re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in digests[start:start + 30]])
            found.update({Digest.from_proto(r.digest): r.data for r in self.cas.BatchReadBlobs(request).responses
                          if r.status.code == OK})
        return found

    def read(self, digest: Digest) -> bytes:
        name = f"blobs/{digest.hash}/{digest.size_bytes}"
        return b"".join(r.data for r in self.bytestream.Read(bs_pb2.ReadRequest(resource_name=name)))

    def close(self) -> None:
        self.channel.close()


def test_a_server_on_a_full_disk_keeps_its_memory_restarts_and_serves_reads(tmp_path: Path, disk: Path) -> None:
    config = server_config(tmp_path / "server", stores=default_stores(disk / "data"))
    small: dict[Digest, bytes] = {}  # acknowledged blobs: packed store
    large: dict[Digest, bytes] = {}  # acknowledged blobs: disk store
    with pytest.raises(RuntimeError, match="died during the test"):
        with reapi_server_process(tmp_path / "server", config) as server:
            client = Client(server)
            failures = 0
            baseline = 0
            for round_number in range(80):
                blobs = [os.urandom(100_000) for _ in range(20)]
                codes = client.batch(blobs)
                small.update({Digest.of(b): b for b in blobs if codes[Digest.of(b)] == OK})
                blob = os.urandom(3 << 20)
                code, message = client.write(blob)
                if code == OK:
                    large[Digest.of(blob)] = blob
                else:
                    assert code == RESOURCE_EXHAUSTED and "no space left" in message, message
                    failures += 1
                    if failures == 5:  # the disk is full: from here on every write fails
                        baseline = rss_mib(server.process.pid)
            # 200 MiB of writes failed after the baseline; their memory went with them.
            assert failures >= 40 and baseline
            assert rss_mib(server.process.pid) - baseline < 40, (baseline, rss_mib(server.process.pid))
            client.close()
            os.kill(server.process.pid, signal.SIGKILL)  # a crash on the full disk
            server.process.popen.wait(10)  # type: ignore[union-attr]
    assert small and large

    with reapi_server_process(tmp_path / "server", config) as server:
        client = Client(server)
        assert "its disk is full" in server.process.log_text()
        assert client.read_small(list(small)) == small
        assert all(client.read(digest) == blob for digest, blob in large.items())
        code, message = client.write(os.urandom(3 << 20))
        assert code == RESOURCE_EXHAUSTED and "no space left" in message
        # Space returns: writes work again, without a restart.
        subprocess.run(["mount", "-o", "remount,size=128m", str(disk)], check=True)
        blob = os.urandom(3 << 20)
        assert client.write(blob) == (OK, "")
        blobs = [os.urandom(100_000) for _ in range(5)]
        assert set(client.batch(blobs).values()) == {OK}
        assert client.read(Digest.of(blob)) == blob
        assert client.read_small([Digest.of(b) for b in blobs]) == {Digest.of(b): b for b in blobs}
        client.close()
        assert not [line for line in server.problems() if "Traceback" in line], server.problems()
