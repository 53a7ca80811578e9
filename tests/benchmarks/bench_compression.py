"""Compression and chunking (issue 14): the codecs, ByteStream identity vs zstd, FastCDC.

    .venv/bin/python -m tests.benchmarks.bench_compression [--mib 64] [--rounds 3]

The data is build output: real object code from the static libraries of this
machine's toolchain (libpython*.a, gcc's and the C library's ``.a`` archives of
``.o`` files), concatenated to ``--mib``. Everything is measured in one sitting and
interleaved round by round, so the machine's noise hits every row alike; compare
ratios across rows, not absolute numbers across days.

1. codecs in this process: ratio, compress and decompress MB/s (the cost of
   compressing on the way out vs decompressing if the stores kept blobs compressed);
2. ByteStream over loopback against a ``reapi-server`` process (memory CAS, so the
   rows show the services and codecs, not a disk): MB/s of blob (uncompressed) bytes,
   bytes on the wire (message payloads), and the server's CPU seconds (user +
   system from /proc, which unlike wall time does not depend on the neighbours);
3. FastCDC 2020 (512 KiB average): ours (numpy) against pyfastcdc (Cython) and
   SHA-256 on the same bytes, and SplitBlob over gRPC;
4. the worker's fetch of a large compressible input (cas/remote/store.py, as the worker
   uses it) with and without zstd: wall time, bytes on the wire, CPU on each side;
5. what storing by chunks would save: the bytes two related artifacts share as
   FastCDC chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import os
import statistics
import sysconfig
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pyfastcdc
import zstandard

from cas.chunking.fastcdc import FastCdc
from cas.compression.codecs import ZstdCodec
from cas.compression.policy import TransferCompression
from cas.remote.store import RemoteStore
from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.resource_names import download_name, upload_name
from tests.benchmarks.bench_storage import cpu_seconds
from tests.support.server_process import reapi_server_process, server_config

MiB = 1 << 20
CHUNK = MiB


def archives() -> list[Path]:
    """Static libraries of this machine's toolchain: archives of real object files."""
    found: list[str] = []
    libpl = sysconfig.get_config_var("LIBPL") or ""
    found += sorted(glob.glob(os.path.join(libpl, "libpython*.a")))
    found += sorted(glob.glob("/usr/lib/gcc/*/*/*.a"))
    found += sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.a")) + sorted(glob.glob("/usr/lib/aarch64-linux-gnu/*.a"))
    return [Path(p) for p in dict.fromkeys(found) if os.path.getsize(p) > 64 << 10]


def corpus(size: int) -> tuple[bytes, list[Path]]:
    parts, used, total = [], [], 0
    for path in archives():
        data = path.read_bytes()
        parts.append(data)
        used.append(path)
        total += len(data)
        if total >= size:
            break
    data = b"".join(parts)
    if len(data) < size:
        raise SystemExit(f"only {len(data) >> 20} MiB of static libraries found; pass a smaller --mib")
    return data[:size], used


def mbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:,.0f} MB/s"


def per_cpu(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:,.0f} MB/cpu-s"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


def bench_codecs(data: bytes, rounds: int) -> None:
    codecs: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "zstd level 1": (zstandard.ZstdCompressor(level=1).compress, zstandard.ZstdDecompressor().decompress),
        "zstd level 3": (zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress),
        "deflate level 1": (lambda d: _deflate(d, 1), lambda d: zlib.decompress(d, -15)),
        "deflate level 6": (lambda d: _deflate(d, 6), lambda d: zlib.decompress(d, -15)),
    }
    times: dict[str, tuple[list[float], list[float], int]] = {name: ([], [], 0) for name in codecs}
    for _ in range(rounds):
        for name, (compress, decompress) in codecs.items():
            start = time.process_time()
            form = compress(data)
            middle = time.process_time()
            assert decompress(form) == data
            end = time.process_time()
            times[name][0].append(middle - start)
            times[name][1].append(end - middle)
            times[name] = (times[name][0], times[name][1], len(form))
    rows = []
    for name, (c, d, size) in times.items():
        rows.append([name, f"{size / len(data):.3f}", per_cpu(len(data), statistics.median(c)),
                     per_cpu(len(data), statistics.median(d))])
    table(f"codecs on {len(data) >> 20} MiB of object code (median of {rounds}; MB per CPU-second, one thread)",
          ["codec", "size ratio", "compress", "decompress"], rows)


def _deflate(data: bytes, level: int) -> bytes:
    encoder = zlib.compressobj(level, zlib.DEFLATED, -15)
    return encoder.compress(data) + encoder.flush()


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * MiB)])
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)


def pieces(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


def write(client: Client, digest: Digest, payload: bytes, compressor: str) -> float:
    name = upload_name("", str(uuid.uuid4()), digest, compressor=compressor)

    def requests() -> Iterator[bs_pb2.WriteRequest]:
        offset = 0
        for piece in pieces(payload):
            offset += len(piece)
            yield bs_pb2.WriteRequest(resource_name=name, write_offset=offset - len(piece), data=piece,
                                      finish_write=offset == len(payload))

    start = time.perf_counter()
    response = client.bytestream.Write(requests())
    elapsed = time.perf_counter() - start
    assert response.committed_size == len(payload), (response.committed_size, len(payload))
    return elapsed


def read(client: Client, digest: Digest, compressor: str) -> tuple[float, int]:
    start = time.perf_counter()
    received = [r.data for r in client.bytestream.Read(bs_pb2.ReadRequest(resource_name=download_name("", digest, compressor)))]
    elapsed = time.perf_counter() - start
    return elapsed, sum(map(len, received))


class Row:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.wire = 0

    def render(self, size: int) -> list[str]:
        return [self.name, mbps(size, statistics.median(self.seconds)), f"{self.wire / MiB:.1f} MiB",
                f"{statistics.median(self.cpu):.2f} s"]


def bench_bytestream(data: bytes, rounds: int, workdir: Path) -> Client:
    zstd = zstandard.ZstdCompressor(level=1)
    rows = {name: Row(name) for name in ("Write identity", "Write zstd (client compressed level 1)",
                                          "Read identity", "Read zstd, compressed on the way out",
                                          "Read zstd, the kept form (third read)")}
    memory = {"mem": {"type": "memory", "max_size": "4GiB"}, "cas": {"type": "verify", "inner": "mem"},
              "ac": {"type": "memory", "max_size": "16MiB"}}
    config = server_config(workdir, stores=memory, server={"compressed_cache_size": "512MiB"})
    with reapi_server_process(workdir, config) as server:
        pid = server.process.pid
        client = Client(server.address)
        client_compress = []
        for r in range(rounds):
            blobs = []
            for compressor in ("", "zstd"):
                blob = f"round {r} {compressor} {time.time()}\n".encode().ljust(4096, b".") + data[4096:]
                digest = Digest.of(blob)
                started = time.perf_counter()
                payload = zstd.compress(blob) if compressor else blob
                if compressor:
                    client_compress.append(time.perf_counter() - started)
                row = rows["Write zstd (client compressed level 1)" if compressor else "Write identity"]
                cpu = cpu_seconds(pid)
                row.seconds.append(write(client, digest, payload, compressor))
                row.cpu.append(cpu_seconds(pid) - cpu)
                row.wire = len(payload)
                blobs.append(digest)
            digest = blobs[0]
            for name, compressor in (("Read identity", ""), ("Read zstd, compressed on the way out", "zstd")):
                cpu = cpu_seconds(pid)
                elapsed, wire = read(client, digest, compressor)
                rows[name].seconds.append(elapsed)
                rows[name].cpu.append(cpu_seconds(pid) - cpu)
                rows[name].wire = wire
            read(client, digest, "zstd")  # the second compressed read keeps the form
            cpu = cpu_seconds(pid)
            elapsed, wire = read(client, digest, "zstd")
            kept = rows["Read zstd, the kept form (third read)"]
            kept.seconds.append(elapsed)
            kept.cpu.append(cpu_seconds(pid) - cpu)
            kept.wire = wire
        table(f"ByteStream, one {len(data) >> 20} MiB blob of object code over loopback (median of {rounds}; "
              f"MB/s of blob bytes; client zstd level 1 compression took {statistics.median(client_compress):.2f} s "
              f"more, not counted)", ["call", "throughput", "on the wire", "server CPU"],
              [row.render(len(data)) for row in rows.values()])
        bench_split(client, data, rounds, pid)
        asyncio.run(bench_worker_fetch(client, server.address, data, rounds, pid))
        client.channel.close()
    return client


def bench_split(client: Client, data: bytes, rounds: int, pid: int) -> None:
    digest = Digest.of(data)
    write(client, digest, data, "")
    native, vectorised = FastCdc(native=True), FastCdc(native=False)
    ours, ours_numpy, streamed, reference, sha = [], [], [], [], []
    first, again, first_cpu = [], [], []
    for r in range(rounds):
        start = time.process_time()
        lengths = native.split(data)
        ours.append(time.process_time() - start)
        start = time.process_time()
        chunker = native.chunker()
        for piece in pieces(data):
            chunker.feed(piece)
        chunker.finish()
        streamed.append(time.process_time() - start)
        start = time.process_time()
        assert vectorised.split(data) == lengths
        ours_numpy.append(time.process_time() - start)
        start = time.process_time()
        ref = [c.length for c in pyfastcdc.FastCDC(512 << 10, normalized_chunking=2).cut_buf(data)]
        reference.append(time.process_time() - start)
        start = time.process_time()
        hashlib.sha256(data).digest()
        sha.append(time.process_time() - start)
        assert lengths == ref
        blob = f"split {r} {time.time()}".encode().ljust(4096, b".") + data[4096:]
        blob_digest = Digest.of(blob)
        write(client, blob_digest, blob, "")
        request = re_pb2.SplitBlobRequest(blob_digest=blob_digest.to_proto())
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        chunks = client.cas.SplitBlob(request).chunk_digests
        first.append(time.perf_counter() - start)
        first_cpu.append(cpu_seconds(pid) - cpu)
        start = time.perf_counter()
        client.cas.SplitBlob(request)
        again.append(time.perf_counter() - start)
    size = len(data)
    table(f"FastCDC 2020, 512 KiB average, on {size >> 20} MiB of object code (median of {rounds}; "
          f"{len(lengths)} chunks, mean {size // len(lengths) >> 10} KiB)", ["what", "throughput", "note"], [
        ["cas/chunking/fastcdc.py, C loop, whole blob", per_cpu(size, statistics.median(ours)),
         "boundaries equal the reference's"],
        ["  ... the same fed 1 MiB at a time (as SplitBlob)", per_cpu(size, statistics.median(streamed)),
         "plus buffering and a copy per chunk"],
        ["cas/chunking/fastcdc.py, numpy (no C compiler)", per_cpu(size, statistics.median(ours_numpy)), ""],
        ["pyfastcdc (Cython), the reference", per_cpu(size, statistics.median(reference)), ""],
        ["SHA-256 of the same bytes (hashlib)", per_cpu(size, statistics.median(sha)), "every chunk is hashed too"],
        ["SplitBlob over gRPC, first time", mbps(size, statistics.median(first)),
         f"read, chunk, hash, store {len(chunks)} chunks; server CPU {statistics.median(first_cpu):.2f} s"],
        ["SplitBlob over gRPC, again", f"{statistics.median(again) * 1000:.0f} ms", "remembered: FindMissing of blob and chunks"],
    ])


async def bench_worker_fetch(client: Client, address: str, data: bytes, rounds: int, pid: int) -> None:
    modes = {"plain": None, "zstd (level 1, server compresses on the way out)": TransferCompression(ZstdCodec())}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    mine: dict[str, list[float]] = {m: [] for m in modes}
    theirs: dict[str, list[float]] = {m: [] for m in modes}
    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * MiB)])
    wire = {"plain": len(data), "zstd (level 1, server compresses on the way out)": len(ZstdCodec().compress(data))}
    for r in range(rounds):
        for mode, compression in modes.items():
            blob = f"fetch {r} {mode} {time.time()}".encode().ljust(4096, b".") + data[4096:]
            digest = Digest.of(blob)
            write(client, digest, blob, "")
            store = RemoteStore(channel, "", compression=compression)
            cpu, own = cpu_seconds(pid), time.process_time()
            start = time.perf_counter()
            got = b"".join([piece async for piece in store.read(digest)])
            wall[mode].append(time.perf_counter() - start)
            mine[mode].append(time.process_time() - own)
            theirs[mode].append(cpu_seconds(pid) - cpu)
            assert got == blob
    await channel.close()
    rows = []
    for mode in modes:
        link = wire[mode] * 8 / 100e6
        rows.append([mode, mbps(len(data), statistics.median(wall[mode])), f"{wire[mode] / MiB:.1f} MiB",
                     f"{statistics.median(theirs[mode]):.2f} s", f"{statistics.median(mine[mode]):.2f} s", f"{link:.1f} s"])
    table(f"worker fetch of a {len(data) >> 20} MiB compressible input (RemoteStore.read, median of {rounds}; "
          "the last column is the wire time alone on a 100 Mbit/s link, computed)",
          ["transfer", "throughput (loopback)", "on the wire", "server CPU", "worker CPU", "100 Mbit/s wire"], rows)


def shared_fraction(old: bytes, new: bytes) -> tuple[float, int]:
    cdc = FastCdc()

    def chunks(data: bytes) -> dict[str, int]:
        out, at = {}, 0
        for length in cdc.split(data):
            out[hashlib.sha256(data[at : at + length]).hexdigest()] = length
            at += length
        return out

    before, after = chunks(old), chunks(new)
    shared = sum(length for key, length in after.items() if key in before)
    return shared / len(new), len(after)


def bench_sharing(data: bytes) -> None:
    rows = []
    edited = bytearray(data)
    for at in range(len(data) // 4, len(data), len(data) // 4):  # three edits, each shifting what follows
        edited[at:at] = b"recompiled object member " * 40
    fraction, count = shared_fraction(data, bytes(edited))
    rows.append(["the corpus and itself with 3 members rewritten (sizes shift)", f"{fraction:.1%}", str(count)])
    own = Path(sysconfig.get_config_var("LIBPL") or "/") / str(sysconfig.get_config_var("LIBRARY"))
    if own.exists() and len(own.parents) > 4:
        # Another CPython's static library beside this one (pyenv keeps several): the same
        # sources a version apart, compiled again.
        others = sorted(p for p in own.parents[4].glob("*/lib/python3.*/config-*/libpython3.*.a") if p.name != own.name)
        newer = [p for p in others if p.name > own.name] or others
        if newer:
            fraction, count = shared_fraction(own.read_bytes(), newer[0].read_bytes())
            rows.append([f"{newer[0].name} against {own.name}", f"{fraction:.1%}", str(count)])
        rebuilt = bytearray(own.read_bytes())
        rebuilt[len(rebuilt) // 2 : len(rebuilt) // 2 + 64] = os.urandom(64)  # one object recompiled, same size
        fraction, count = shared_fraction(own.read_bytes(), bytes(rebuilt))
        rows.append([f"{own.name} and itself with 64 bytes changed in place", f"{fraction:.1%}", str(count)])
    table("what storing by chunks could save: bytes of the second artifact already present as chunks of the first",
          ["artifacts", "shared", "chunks"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data, used = corpus(args.mib * MiB)
    print(f"corpus: {len(data) >> 20} MiB from {', '.join(p.name for p in used)}")
    bench_codecs(data, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-compression-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        bench_bytestream(data, args.rounds, Path(d))
    bench_sharing(data)


if __name__ == "__main__":
    main()
