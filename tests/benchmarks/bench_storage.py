"""The storage services over loopback: a real reapi-server process, the client here.

    .venv/bin/python -m tests.benchmarks.bench_storage [--stores defaults,disk,memory]
        [--stream-mib 512] [--big-gib 2] [--dir PATH]

Each store set runs in its own ``python -m server.app --config FILE`` (under
/dev/shm when it exists, so the numbers measure the server, not this machine's
disk; ``--dir`` to choose):
- ``defaults``: the zero-config stores (server/config.py ``default_stores``);
- ``disk``: a verified one-file-per-blob disk CAS and a disk AC (the zero-config
  shape before the packed store);
- ``memory``: a memory CAS and AC, which separates the services' own cost from
  the stores'.
The client is the synchronous gRPC client in this process, as a build tool's would
be: a separate process on the same host. Rows (targets from issue 2, acceptance 5):

- ByteStream Write / Read of one ``--stream-mib`` blob in 1 MiB messages (MB/s),
  against the first store set only;
- FindMissingBlobs of 10,000 digests, half present, digest_function unset as Bazel
  sends it (median ms);
- BatchUpdateBlobs / BatchReadBlobs of 1,000 x 1 KiB (blobs/s, median of runs;
  requests are built before the clock starts);
- GetActionResult round trip for a result with 10 output files, stdout and an
  output directory, completeness checked (median ms), next to GetCapabilities,
  the floor any unary call pays in grpc.aio;
- server peak RSS (VmHWM) while streaming a ``--big-gib`` blob in and out, in a
  fresh server process so the peak belongs to that stream alone.
"server cpu" is the server process's user + system time per call (per batch for
the batch rows), which unlike wall time does not depend on what else the shared
machine runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.config import default_stores
from server.resource_names import download_name, upload_name
from tests.support.server_process import reapi_server_process, server_config

MiB = 1 << 20
CHUNK = MiB
Req = re_pb2.BatchUpdateBlobsRequest.Request


def stores(root: Path) -> dict[str, dict[str, Any]]:
    return {
        "cas-disk": {"type": "disk", "path": str(root / "cas"), "max_size": "16GiB"},
        "cas": {"type": "verify", "inner": "cas-disk"},
        "ac": {"type": "disk", "path": str(root / "ac"), "max_size": "1GiB"},
    }


MEMORY_STORES = {
    "cas-memory": {"type": "memory", "max_size": "2GiB"},
    "cas": {"type": "verify", "inner": "cas-memory"},
    "ac": {"type": "memory", "max_size": "256MiB"},
}


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)]
        )
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)
        self.ac = re_grpc.ActionCacheStub(self.channel)

    def close(self) -> None:
        self.channel.close()


class BigBlob:
    """A large blob made on the fly from a 16 MiB random pattern, so the client never holds it."""

    def __init__(self, size: int, seed: bytes) -> None:
        self.size = size
        self.pattern = os.urandom(16 * MiB)
        self.seed = seed
        hasher = hashlib.sha256()
        for chunk in self.chunks():
            hasher.update(chunk)
        self.digest = Digest(hasher.hexdigest(), size)

    def chunks(self) -> Iterator[bytes]:
        pattern = memoryview(self.pattern)
        offset = 0
        while offset < self.size:
            n = min(CHUNK, self.size - offset)
            start = offset % len(self.pattern)
            piece = bytes(pattern[start : start + n])  # chunks never straddle the pattern's end
            if offset == 0:
                piece = self.seed + piece[len(self.seed) :]
            yield piece
            offset += n


def write_blob(client: Client, blob: BigBlob) -> float:
    name = upload_name("", str(uuid.uuid4()), blob.digest)

    def requests() -> Iterator[bs_pb2.WriteRequest]:
        offset = 0
        for chunk in blob.chunks():
            last = offset + len(chunk) == blob.size
            yield bs_pb2.WriteRequest(
                resource_name=name if offset == 0 else "", write_offset=offset, data=chunk, finish_write=last
            )
            offset += len(chunk)

    start = time.perf_counter()
    response = client.bytestream.Write(requests())
    elapsed = time.perf_counter() - start
    assert response.committed_size == blob.size, response
    return elapsed


def read_blob(client: Client, digest: Digest) -> float:
    start = time.perf_counter()
    total = 0
    for response in client.bytestream.Read(bs_pb2.ReadRequest(resource_name=download_name("", digest))):
        total += len(response.data)
    elapsed = time.perf_counter() - start
    assert total == digest.size_bytes, (total, digest)
    return elapsed


def kib_blobs(count: int, seed: str) -> list[tuple[Digest, bytes]]:
    out = []
    for i in range(count):
        data = f"{seed}-{i}-".encode().ljust(1024, b".")
        out.append((Digest.of(data), data))
    return out


def batch_update(client: Client, blobs: list[tuple[Digest, bytes]]) -> None:  # setup, untimed
    response = client.cas.BatchUpdateBlobs(
        re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=d.to_proto(), data=b) for d, b in blobs])
    )
    assert all(r.status.code == 0 for r in response.responses)


def timings(runs: int, call: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """The server's CPU time over a measured section, per call."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = 0.0

    def __enter__(self) -> ServerCpu:
        self.start = cpu_seconds(self.pid)
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = cpu_seconds(self.pid) - self.start

    def per_call(self, calls: int) -> str:
        return f"{self.seconds / calls * 1000:.3f} ms"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def row(name: str, median: str, best: str, target: str, ok: bool | None, cpu: str = "") -> None:
    met = "" if ok is None else "yes" if ok else "NO"
    print(f"| {name:<48} | {median:>16} | {best:>16} | {target:>14} | {met:>4} | {cpu:>10} |", flush=True)


def latency_row(name: str, seconds: list[float], target_ms: float, digits: int = 1, cpu: str = "") -> None:
    median, best = statistics.median(seconds) * 1000, min(seconds) * 1000
    row(name, f"{median:.{digits}f} ms", f"{best:.{digits}f} ms", f"<= {target_ms:g} ms", median <= target_ms, cpu)


def rate_row(name: str, seconds: list[float], amount: float, unit: str, target: float, cpu: str = "") -> None:
    median, best = amount / statistics.median(seconds), amount / min(seconds)
    fmt = "{:,.0f} " + unit
    row(name, fmt.format(median), fmt.format(best), f">= {target:,.0f}", median >= target, cpu)


def bench_streams(client: Client, stream_mib: int) -> None:
    size = stream_mib * MiB
    writes, reads = [], []
    for i in range(3):
        blob = BigBlob(size, seed=f"stream-{i}-{time.time()}".encode())
        writes.append(write_blob(client, blob))
        reads.append(read_blob(client, blob.digest))
    rate_row(f"ByteStream Write {stream_mib} MiB (3 runs)", writes, size / 1e6, "MB/s", 400)
    rate_row(f"ByteStream Read {stream_mib} MiB (3 runs)", reads, size / 1e6, "MB/s", 1000)


def bench_requests(client: Client, label: str, pid: int) -> None:
    """FindMissingBlobs, the batch RPCs and GetActionResult; requests are built before timing."""
    present = kib_blobs(5000, f"present-{time.time()}")
    for start in range(0, len(present), 1000):
        batch_update(client, present[start : start + 1000])
    absent = [Digest.of(f"absent-{i}-{time.time()}".encode()) for i in range(5000)]
    protos = [d.to_proto() for d, _ in present] + [d.to_proto() for d in absent]
    request = re_pb2.FindMissingBlobsRequest(blob_digests=protos)
    assert len(client.cas.FindMissingBlobs(request).missing_blob_digests) == 5000
    with ServerCpu(pid) as cpu:
        times = timings(30, lambda: client.cas.FindMissingBlobs(request))
    latency_row(f"FindMissingBlobs 10,000 digests{label}", times, 20, cpu=cpu.per_call(30))
    named = re_pb2.FindMissingBlobsRequest(blob_digests=protos, digest_function=re_pb2.DigestFunction.SHA256)
    with ServerCpu(pid) as cpu:
        times = timings(30, lambda: client.cas.FindMissingBlobs(named))
    latency_row("  ... with digest_function = SHA256", times, 20, cpu=cpu.per_call(30))

    updates = [
        re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=d.to_proto(), data=b) for d, b in kib_blobs(1000, f"batch-{i}-{time.time()}")])
        for i in range(10)
    ]
    times = []
    with ServerCpu(pid) as cpu:
        for update in updates:
            began = time.perf_counter()
            response = client.cas.BatchUpdateBlobs(update)
            times.append(time.perf_counter() - began)
            assert all(r.status.code == 0 for r in response.responses)
    rate_row(f"BatchUpdateBlobs 1,000 x 1 KiB{label}", times, 1000, "blobs/s", 100_000, cpu.per_call(len(updates)))
    read_request = re_pb2.BatchReadBlobsRequest(digests=[r.digest for r in updates[0].requests])
    assert all(r.status.code == 0 for r in client.cas.BatchReadBlobs(read_request).responses)
    with ServerCpu(pid) as cpu:
        reads = timings(10, lambda: client.cas.BatchReadBlobs(read_request))
    rate_row(f"BatchReadBlobs 1,000 x 1 KiB{label}", reads, 1000, "blobs/s", 100_000, cpu.per_call(10))

    action = Digest.of(f"bench action {time.time()}".encode())
    outputs = present[:12]
    tree = re_pb2.Tree(root=re_pb2.Directory(files=[re_pb2.FileNode(name="x", digest=outputs[11][0].to_proto())]))
    tree_data = tree.SerializeToString()
    batch_update(client, [(Digest.of(tree_data), tree_data)])
    result = re_pb2.ActionResult(
        output_files=[re_pb2.OutputFile(path=f"out/{i}", digest=d.to_proto()) for i, (d, _) in enumerate(outputs[:10])],
        output_directories=[re_pb2.OutputDirectory(path="dir", tree_digest=Digest.of(tree_data).to_proto())],
        stdout_digest=outputs[10][0].to_proto(),
    )
    client.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action.to_proto(), action_result=result))
    get = re_pb2.GetActionResultRequest(action_digest=action.to_proto())
    assert client.ac.GetActionResult(get) == result
    for _ in range(200):
        client.ac.GetActionResult(get)
    with ServerCpu(pid) as cpu:
        times = timings(2000, lambda: client.ac.GetActionResult(get))
    latency_row(f"GetActionResult round trip{label}", times, 0.5, 3, cpu.per_call(2000))
    capabilities = re_grpc.CapabilitiesStub(client.channel)
    caps_request = re_pb2.GetCapabilitiesRequest()
    with ServerCpu(pid) as cpu:
        floor = timings(2000, lambda: capabilities.GetCapabilities(caps_request))
    row("  (floor: GetCapabilities round trip)", f"{statistics.median(floor) * 1000:.3f} ms", f"{min(floor) * 1000:.3f} ms", "", None, cpu.per_call(2000))


def bench_memory(workdir: Path, data_root: Path, big_gib: float) -> None:
    size = int(big_gib * 1024) * MiB
    with reapi_server_process(workdir / "memory-server", server_config(workdir, stores=default_stores(data_root / "big"))) as server:
        client = Client(server.address)
        try:
            pid = server.process.pid
            before = peak_rss_mib(pid)
            blob = BigBlob(size, seed=f"big-{time.time()}".encode())
            write_s = write_blob(client, blob)
            after_write = peak_rss_mib(pid)
            read_s = read_blob(client, blob.digest)
            after_read = peak_rss_mib(pid)
        finally:
            client.close()
    gib = size / (1 << 30)
    row(f"server peak RSS before a {gib:.0f} GiB stream", f"{before:.0f} MiB", "", "", None)
    row(f"  ... after writing it ({size / 1e6 / write_s:.0f} MB/s)", f"{after_write:.0f} MiB", "", "< +256 MiB", after_write < before + 256)
    row(f"  ... after reading it ({size / 1e6 / read_s:.0f} MB/s)", f"{after_read:.0f} MiB", "", "< +256 MiB", after_read < before + 256)


STORE_SETS = {
    "defaults": (" (defaults)", lambda root: default_stores(root)),
    "disk": (" (one-file disk CAS)", stores),
    "memory": (" (memory CAS)", lambda root: MEMORY_STORES),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="defaults,disk,memory", help="store sets to run, in order (defaults, disk, memory)")
    parser.add_argument("--stream-mib", type=int, default=512)
    parser.add_argument("--big-gib", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, help="where the server keeps its stores (default: /dev/shm if present)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(STORE_SETS))
    if unknown:
        parser.error(f"unknown store sets {unknown} (known: {', '.join(STORE_SETS)})")
    base = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    workdir = Path(tempfile.mkdtemp(prefix="reapi-bench-storage-", dir=base))
    try:
        print(f"stores under {workdir}; store sets: {', '.join(chosen)}; client: sync grpc in this process")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
        print(f"| {'measurement':<48} | {'median':>16} | {'best':>16} | {'target':>14} | {'met':>4} | {'server cpu':>10} |")
        print(f"|{'-' * 50}|{'-' * 18}|{'-' * 18}|{'-' * 16}|{'-' * 6}|{'-' * 12}|")
        for position, name in enumerate(chosen):
            label, make_stores = STORE_SETS[name]
            run_dir = workdir / f"{position}-{name}"  # a set may be listed twice, to see the noise
            config = server_config(run_dir, stores=make_stores(run_dir / "data"))
            with reapi_server_process(run_dir, config) as server:
                client = Client(server.address)
                try:
                    if position == 0 and args.stream_mib > 0:
                        bench_streams(client, args.stream_mib)
                    bench_requests(client, label, server.process.pid)
                finally:
                    client.close()
        if args.big_gib > 0:
            bench_memory(workdir, workdir / "data", args.big_gib)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; 'met' judges the median")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
