"""What security costs (issue 9, acceptance 7), measured in one sitting, interleaved.

    .venv/bin/python -m tests.benchmarks.bench_security [--rounds 15] [--stream-mib 64]

Four real reapi-server processes with the zero-config stores under /dev/shm, the
synchronous gRPC client in this process:
- ``plain``: no TLS, no authentication (the zero-config server);
- ``token``: plain text with a token file (loopback), every call with ``authorization``;
- ``tls``: TLS, no authentication;
- ``tls+token``: both, as a secured farm runs.
Each round measures every server in turn (so load on the shared machine hits them
alike), and the table gives the median over rounds and the ratio to ``plain``:
- GetActionResult round trip (median of 1,000 calls; target: token <= 1.05 x plain);
- BatchUpdateBlobs of 1,000 x 1 KiB (blobs/s, median of 10 batches; target the same);
- ByteStream Write and Read of one ``--stream-mib`` blob (MB/s; target: TLS >= 0.8 x plain).
CPU rows (the server process's, and this client's for streams) depend less on what
else the shared machine runs than wall time does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
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
from tests.benchmarks.bench_storage import BigBlob, cpu_seconds, kib_blobs, timings
from tests.support.certificates import TestPki
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.tokens import TokenFile

MiB = 1 << 20
Req = re_pb2.BatchUpdateBlobsRequest.Request
SETUPS = ("plain", "token", "tls", "tls+token")


@dataclass
class Target:
    name: str
    server: ServerProcess
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...] | None
    results: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.ac = re_grpc.ActionCacheStub(self.channel)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)

    def record(self, what: str, value: float) -> None:
        self.results.setdefault(what, []).append(value)


def start(stack: ExitStack, name: str, workdir: Path, pki: TestPki, tokens: TokenFile, token: str) -> Target:
    server_section: dict[str, Any] = {}
    if "tls" in name:
        pair = pki.server_certificate(f"server-{name.replace('+', '-')}")
        server_section["tls"] = {"cert": str(pair.cert), "key": str(pair.key)}
    if "token" in name:
        server_section["auth"] = {"tokens": str(tokens.path)}
    where = workdir / name.replace("+", "-")
    config = server_config(where, stores=default_stores(where / "data"), server=server_section,
                           execution={"enabled": False})
    server = stack.enter_context(reapi_server_process(where, config))
    options = [("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)]
    if "tls" in name:
        channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(pki.ca_cert.read_bytes()), options)
    else:
        channel = grpc.insecure_channel(server.address, options)
    grpc.channel_ready_future(channel).result(timeout=30)
    stack.callback(channel.close)
    metadata = (("authorization", f"Bearer {token}"),) if "token" in name else None
    return Target(name, server, channel, metadata)


def prepared_get(target: Target) -> Callable[[], object]:
    """An action result with 10 output files and stdout, stored; the Get call to time."""
    blobs = kib_blobs(11, f"{target.name}-{time.time()}")
    target.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
        requests=[Req(digest=d.to_proto(), data=b) for d, b in blobs]), metadata=target.metadata)
    action = Digest.of(f"bench action {target.name} {time.time()}".encode())
    result = re_pb2.ActionResult(
        output_files=[re_pb2.OutputFile(path=f"out/{i}", digest=d.to_proto()) for i, (d, _) in enumerate(blobs[:10])],
        stdout_digest=blobs[10][0].to_proto())
    target.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action.to_proto(), action_result=result),
                                 metadata=target.metadata)
    get = re_pb2.GetActionResultRequest(action_digest=action.to_proto())
    return lambda: target.ac.GetActionResult(get, metadata=target.metadata)


def measure_round(target: Target, get: Callable[[], object], stream_mib: int, index: int) -> None:
    for _ in range(100):
        get()
    cpu = cpu_seconds(target.server.process.pid)
    target.record("get", statistics.median(timings(1000, get)))
    target.record("get_cpu", (cpu_seconds(target.server.process.pid) - cpu) / 1000)

    batches = [re_pb2.BatchUpdateBlobsRequest(requests=[
        Req(digest=d.to_proto(), data=b) for d, b in kib_blobs(1000, f"{target.name}-{index}-{i}-{time.time()}")])
        for i in range(10)]
    times = []
    cpu = cpu_seconds(target.server.process.pid)
    for batch in batches:
        began = time.perf_counter()
        response = target.cas.BatchUpdateBlobs(batch, metadata=target.metadata)
        times.append(time.perf_counter() - began)
        assert all(r.status.code == 0 for r in response.responses)
    target.record("batch", 1000 / statistics.median(times))
    target.record("batch_cpu", (cpu_seconds(target.server.process.pid) - cpu) / len(batches))

    size = stream_mib * MiB
    blob = BigBlob(size, seed=f"{target.name}-{index}-{time.time()}".encode())
    name = upload_name("", f"00000000-0000-4000-8000-{index:012d}", blob.digest)

    def requests() -> Iterator[bs_pb2.WriteRequest]:
        offset = 0
        for chunk in blob.chunks():
            yield bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset, data=chunk,
                                      finish_write=offset + len(chunk) == size)
            offset += len(chunk)

    pid = target.server.process.pid
    began, cpu, own = time.perf_counter(), cpu_seconds(pid), time.process_time()
    assert target.bytestream.Write(requests(), metadata=target.metadata).committed_size == size
    target.record("write", size / 1e6 / (time.perf_counter() - began))
    target.record("write_cpu", (cpu_seconds(pid) - cpu + time.process_time() - own) / (size / 1e9))
    began, cpu, own = time.perf_counter(), cpu_seconds(pid), time.process_time()
    total = sum(len(r.data) for r in target.bytestream.Read(
        bs_pb2.ReadRequest(resource_name=download_name("", blob.digest)), metadata=target.metadata))
    assert total == size
    target.record("read", size / 1e6 / (time.perf_counter() - began))
    target.record("read_cpu", (cpu_seconds(pid) - cpu + time.process_time() - own) / (size / 1e9))


ROWS = (
    ("get", "GetActionResult round trip, median", lambda v: f"{v * 1000:.3f} ms", "token <= 1.05x"),
    ("get_cpu", "  server CPU per GetActionResult", lambda v: f"{v * 1000:.3f} ms", ""),
    ("batch", "BatchUpdateBlobs 1,000 x 1 KiB", lambda v: f"{v:,.0f} blobs/s", "token >= 0.95x"),
    ("batch_cpu", "  server CPU per batch", lambda v: f"{v * 1000:.2f} ms", ""),
    ("write", "ByteStream Write", lambda v: f"{v:,.0f} MB/s", "tls >= 0.8x"),
    ("write_cpu", "  CPU (server + client) per GB written", lambda v: f"{v:.2f} s", ""),
    ("read", "ByteStream Read", lambda v: f"{v:,.0f} MB/s", "tls >= 0.8x"),
    ("read_cpu", "  CPU (server + client) per GB read", lambda v: f"{v:.2f} s", ""),
)


def report(targets: list[Target], stream_mib: int) -> None:
    """Each value: the median over rounds (and its range); each ratio: the median of the
    rounds' ratios to ``plain`` (the setups of one round ran back to back, so a ratio
    compares them under the same load)."""
    print(f"| measurement | {' | '.join(t.name for t in targets)} | ratio to plain (median of rounds) | target |")
    print("|---|" + "---|" * (len(targets) + 2))
    plain = targets[0]
    for key, label, show, target in ROWS:
        cells = [f"{show(statistics.median(t.results[key]))} ({show(min(t.results[key]))}-{show(max(t.results[key]))})"
                 for t in targets]
        ratios = []
        for t in targets[1:]:
            per_round = [mine / base for mine, base in zip(t.results[key], plain.results[key])]
            ratios.append(f"{t.name} {statistics.median(per_round):.3f}")
        name = f"{label} {stream_mib} MiB" if key in ("write", "read") else label
        print(f"| {name} | {' | '.join(cells)} | {', '.join(ratios)} | {target} |")


class _Context:
    """What the permission check reads of a call's context."""

    def __init__(self, token: str) -> None:
        self.metadata = (("user-agent", "bench"), ("authorization", f"Bearer {token}"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def check_cost(workdir: Path, calls: int = 200_000) -> tuple[float, float]:
    """CPU seconds per call of a GetActionResult handler, bare and behind the permission
    check (server/auth/authorizer.py), in this process: the check's own cost, which the
    shared machine's load cannot blur the way it blurs a round trip."""
    import asyncio

    from server.auth.authenticator import Authenticator
    from server.auth.authorizer import Authorizer
    from server.auth.certificates import CertificateRules
    from server.auth.permissions import anonymous
    from server.auth.tokens import TokenTable

    tokens = TokenFile(workdir / "check-tokens.toml")
    token = tokens.add("bench", ["read"])
    authorizer = Authorizer(Authenticator(TokenTable(tokens.path), None, CertificateRules([]), anonymous(frozenset())))
    answer = re_pb2.ActionResult()

    async def get(request: re_pb2.GetActionResultRequest, context: object) -> re_pb2.ActionResult:
        return answer

    bare = grpc.unary_unary_rpc_method_handler(get)
    checked = authorizer.wrap("/build.bazel.remote.execution.v2.ActionCache/GetActionResult", bare)
    request, context = re_pb2.GetActionResultRequest(instance_name="main"), _Context(token)

    async def run(behaviour: Any) -> float:
        start = time.process_time()
        for _ in range(calls):
            await behaviour(request, context)
        return (time.process_time() - start) / calls

    async def both() -> tuple[float, float]:
        await run(checked.unary_unary)  # warm: token file read, verdict remembered
        return await run(bare.unary_unary), await run(checked.unary_unary)

    return asyncio.run(both())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--stream-mib", type=int, default=64)
    args = parser.parse_args()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    workdir = Path(tempfile.mkdtemp(prefix="reapi-bench-security-", dir=base))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores); "
          f"{args.rounds} rounds, each server in turn")
    try:
        pki = TestPki(workdir / "pki")
        tokens = TokenFile(workdir / "tokens.toml")
        token = tokens.add("bench", ["read", "write", "ac-write"])
        with ExitStack() as stack:
            targets = [start(stack, name, workdir, pki, tokens, token) for name in SETUPS]
            gets = [prepared_get(t) for t in targets]
            for index in range(args.rounds):
                for target, get in zip(targets, gets):
                    measure_round(target, get, args.stream_mib, index)
                print(f"round {index + 1} done", flush=True)
            report(targets, args.stream_mib)
        bare, checked = check_cost(workdir)
        print(f"\npermission check alone (in-process CPU per GetActionResult call): bare handler "
              f"{bare * 1e6:.1f} us, behind the check {checked * 1e6:.1f} us: +{(checked - bare) * 1e6:.1f} us")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
