"""Remote Asset downloads: `python -m tests.benchmarks.bench_assets [--size-mib 256]`.

A real ``reapi-server`` process (zero-config disk stores) fetches one large file
from an HTTP origin on 127.0.0.1 (http.server with sendfile, in this process) with
FetchBlob, in three ways:

- **sha256 checksum**: the checksum names the digest, so the download streams
  straight into the CAS (Bazel's case: it sends ``checksum.sri`` and SHA-256);
- **no checksum**: the digest is unknown until the end, so the content is spooled
  to a temporary file, then written to the CAS;
- **BLAKE3 + sha256 checksum**: two hashes, spooled.

Each way gets a fresh server, so "peak RSS" (the server's VmHWM) is that fetch's
own high-water mark, to compare with the file size: memory stays bounded when it
is far below. "server CPU" is the server process's user + system time for the
fetch: unlike wall time, it hardly changes when other work shares the machine. The repeat fetch is answered from the asset index (no network).
A last row unpacks a tar.gz of many small files with FetchDirectory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import os
import random
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import grpc

from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.support.bazel import fast_tmp_root
from tests.support.http_origin import HttpOrigin
from tests.support.server_process import reapi_server_process, server_config

MIB = 1 << 20


def write_random_file(path: Path, size: int) -> str:
    """Incompressible content; returns its SHA-256 as an SRI value."""
    rng = random.Random(42)
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MIB):
            chunk = rng.randbytes(MIB)
            hasher.update(chunk)
            f.write(chunk)
    return "sha256-" + base64.b64encode(hasher.digest()).decode()


def many_files_archive(count: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for i in range(count):
            data = f"file {i}\n".encode() * 20
            info = tarfile.TarInfo(f"pkg/dir{i % 50}/file{i}.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def fetch_blob(address: str, url: str, sri: str | None, function: re_pb2.DigestFunction.Value) -> tuple[float, asset_pb2.FetchBlobResponse]:
    qualifiers = [asset_pb2.Qualifier(name="checksum.sri", value=sri)] if sri else []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = asset_grpc.FetchStub(channel)
        start = time.perf_counter()
        response = await stub.FetchBlob(asset_pb2.FetchBlobRequest(uris=[url], qualifiers=qualifiers, digest_function=function), timeout=600)
        return time.perf_counter() - start, response


async def fetch_directory(address: str, url: str) -> tuple[float, asset_pb2.FetchDirectoryResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        start = time.perf_counter()
        response = await asset_grpc.FetchStub(channel).FetchDirectory(asset_pb2.FetchDirectoryRequest(uris=[url]), timeout=600)
        return time.perf_counter() - start, response


def local_origin_config(workdir: Path) -> dict[str, object]:
    """The zero-config stores, and permission to fetch from the loopback origin."""
    return server_config(workdir, assets={"allow_private_networks": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=5000, help="files in the FetchDirectory archive")
    args = parser.parse_args(argv)
    size = args.size_mib * MIB

    origin_dir = Path(tempfile.mkdtemp(prefix="reapi-bench-origin-", dir=fast_tmp_root()))
    server_root = Path(tempfile.mkdtemp(prefix="reapi-bench-assets-"))  # the server's disk stores
    origin = HttpOrigin().start()
    rows: list[tuple[str, str, str, str, str, str]] = []
    try:
        big = origin_dir / "big.bin"
        sri = write_random_file(big, size)
        url = origin.serve_file("/big.bin", big)
        cases = [
            ("sha256 checksum (direct to CAS)", sri, re_pb2.DigestFunction.SHA256),
            ("no checksum (spooled)", None, re_pb2.DigestFunction.SHA256),
            ("BLAKE3 + sha256 checksum (spooled)", sri, re_pb2.DigestFunction.BLAKE3),
        ]
        for i, (label, checksum, function) in enumerate(cases):
            with reapi_server_process(server_root / f"server-{i}", local_origin_config(server_root / f"server-{i}")) as server:
                before, _ = peak_rss_mib(server.process.pid)
                cpu_before = cpu_seconds(server.process.pid)
                seconds, response = asyncio.run(fetch_blob(server.address, url, checksum, function))
                if response.status.code != 0:
                    raise SystemExit(f"{label}: FetchBlob failed: {response.status}")
                cpu = cpu_seconds(server.process.pid) - cpu_before
                _, peak = peak_rss_mib(server.process.pid)
                again, _ = asyncio.run(fetch_blob(server.address, url, checksum, function))
            rows.append((
                label, f"{size / seconds / 1e6:,.0f} MB/s", f"{seconds:.2f}s", f"{cpu:.2f}s",
                f"{before:.0f} -> {peak:.0f} MiB", f"{again * 1000:.1f} ms",
            ))
            shutil.rmtree(server_root / f"server-{i}", ignore_errors=True)

        archive = many_files_archive(args.files)
        archive_url = origin.serve("/many.tar.gz", archive)
        with reapi_server_process(server_root / "server-dir", local_origin_config(server_root / "server-dir")) as server:
            cpu_before = cpu_seconds(server.process.pid)
            unpack_seconds, unpacked = asyncio.run(fetch_directory(server.address, archive_url))
            cpu = cpu_seconds(server.process.pid) - cpu_before
            if unpacked.status.code != 0:
                raise SystemExit(f"FetchDirectory failed: {unpacked.status}")
            _, peak = peak_rss_mib(server.process.pid)
            again, _ = asyncio.run(fetch_directory(server.address, archive_url))
        rows.append((
            f"FetchDirectory tar.gz, {args.files} files", f"{args.files / unpack_seconds:,.0f} files/s",
            f"{unpack_seconds:.2f}s", f"{cpu:.2f}s", f"peak {peak:.0f} MiB", f"{again * 1000:.1f} ms",
        ))
    finally:
        origin.stop()
        shutil.rmtree(origin_dir, ignore_errors=True)
        shutil.rmtree(server_root, ignore_errors=True)

    print(f"FetchBlob of a {args.size_mib} MiB file from a loopback origin; server: reapi-server process, zero-config disk stores")
    print(f"{'case':40} {'throughput':>14} {'time':>8} {'server CPU':>11} {'server RSS (start -> peak)':>28} {'repeat (index hit)':>20}")
    for label, rate, took, cpu_text, rss, repeat in rows:
        print(f"{label:40} {rate:>14} {took:>8} {cpu_text:>11} {rss:>28} {repeat:>20}")
    print(f"(machine: {os.cpu_count()} cores; shared with other work unless stated otherwise)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
