"""Server CPU per CAS call (issue 13, item 3): reapi against a peer, same client, interleaved.

    .venv/bin/python -m tests.benchmarks.bench_server_cpu [--rounds 5] [--stores defaults|memory]
        [--before SRC_TREE] [--peer NAME=HOST:PORT@PID ...] [--profile SECONDS]

Wall-clock figures on this 2-core host are bound by the shared Python client, so this
benchmark counts what the *server* spends: the server process's user + system CPU
time (``/proc/PID/stat``, every thread, live or exited) over N calls, divided by N.
Each target serves the same requests, built before the counter starts:

- FindMissingBlobs of 10,000 digests, half present, digest_function unset (as Bazel);
- BatchUpdateBlobs of 1,000 new 1 KiB blobs;
- BatchReadBlobs of the same 1,000 x 1 KiB;
- ByteStream Write of a new 64 MiB blob in 1 MiB messages (the client chooses its chunks);
- ByteStream Read of that 64 MiB blob; the client keeps gRPC's default 4 MiB limit on
  received messages, as Bazel and most clients do, so the server picks its chunks
  under it;
- GetActionResult of a result with 10 output files, stdout and an output directory.

Targets: this tree's ``reapi-server`` (started here with ``--stores``, and with metrics
collected as the zero-config server does unless ``--no-metrics``), optionally the
same server from another source tree (``--before``, e.g. ``git archive`` of main
unpacked somewhere: the "before" of a change, with the same config), and any number
of peers already running (``--peer``, e.g. BuildGrid; docs/BENCHMARKS.md says how it
was set up). Rounds are interleaved (each round runs every section on every target,
in a rotating order) and the table gives each target's median per section and the
ratio of this tree's server (and of "before") to each peer (or to "before" when no
peer is given).
``--profile S`` instead runs each section against this tree's server for S seconds
under py-spy (``PY_SPY`` names the binary) and writes its sampled stacks (py-spy's raw format) to ``--profile-dir``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.config import default_stores
from server.resource_names import download_name, upload_name
from tests.benchmarks.bench_storage import MEMORY_STORES, cpu_seconds
from tests.support import toml_writer
from tests.support.logged_process import LoggedProcess
from tests.support.server_process import LISTENING, reapi_server_process, server_config

MiB = 1 << 20
STREAM_BYTES = 64 * MiB
WRITE_CHUNK = MiB
Req = re_pb2.BatchUpdateBlobsRequest.Request


@dataclass
class Target:
    name: str
    address: str
    pid: int
    cpu: dict[str, list[float]] = field(default_factory=dict)  # section -> per-call CPU seconds, per round

    def __post_init__(self) -> None:
        channel = grpc.insecure_channel(self.address, options=[("grpc.max_send_message_length", 64 * MiB)])
        grpc.channel_ready_future(channel).result(timeout=30)
        self.channel = channel
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)
        self.ac = re_grpc.ActionCacheStub(channel)


def kib_blobs(count: int, seed: str) -> list[tuple[Digest, bytes]]:
    out = []
    for i in range(count):
        data = f"{seed}-{i}-".encode().ljust(1024, b".")
        out.append((Digest.of(data), data))
    return out


def update_request(blobs: list[tuple[Digest, bytes]]) -> re_pb2.BatchUpdateBlobsRequest:
    return re_pb2.BatchUpdateBlobsRequest(requests=[Req(digest=d.to_proto(), data=b) for d, b in blobs])


def stream_blob(seed: str) -> tuple[Digest, list[bytes]]:
    """A 64 MiB blob as 1 MiB chunks; the first chunk differs per seed so every blob is new."""
    pattern = os.urandom(MiB)
    chunks = [pattern] * (STREAM_BYTES // MiB)
    chunks[0] = seed.encode().ljust(MiB, b"\0")
    digest = Digest.of(b"".join(chunks))
    return digest, chunks


class Workload:
    """One target's requests, set up (untimed) before the rounds."""

    def __init__(self, target: Target) -> None:
        self.target = target
        tag = f"{target.name}-{time.time()}"
        present = kib_blobs(5000, f"present-{tag}")
        for start in range(0, len(present), 1000):
            self._check_update(target.cas.BatchUpdateBlobs(update_request(present[start : start + 1000])))
        absent = [Digest.of(f"absent-{i}-{tag}".encode()) for i in range(5000)]
        self.find = re_pb2.FindMissingBlobsRequest(blob_digests=[d.to_proto() for d, _ in present] + [d.to_proto() for d in absent])
        assert len(target.cas.FindMissingBlobs(self.find).missing_blob_digests) == 5000
        self.read = re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d, _ in present[:1000]])
        self.batch_seed = 0
        self.tag = tag
        outputs = present[:12]
        tree = re_pb2.Tree(root=re_pb2.Directory(files=[re_pb2.FileNode(name="x", digest=outputs[11][0].to_proto())]))
        tree_data = tree.SerializeToString()
        self._check_update(target.cas.BatchUpdateBlobs(update_request([(Digest.of(tree_data), tree_data)])))
        result = re_pb2.ActionResult(
            output_files=[re_pb2.OutputFile(path=f"out/{i}", digest=d.to_proto()) for i, (d, _) in enumerate(outputs[:10])],
            output_directories=[re_pb2.OutputDirectory(path="dir", tree_digest=Digest.of(tree_data).to_proto())],
            stdout_digest=outputs[10][0].to_proto(),
        )
        action = Digest.of(f"bench action {tag}".encode())
        target.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action.to_proto(), action_result=result))
        self.get = re_pb2.GetActionResultRequest(action_digest=action.to_proto())
        assert target.ac.GetActionResult(self.get) == result
        self.streamed: Digest | None = None

    @staticmethod
    def _check_update(response: re_pb2.BatchUpdateBlobsResponse) -> None:
        assert all(r.status.code == 0 for r in response.responses), response

    def new_batches(self, count: int) -> list[re_pb2.BatchUpdateBlobsRequest]:
        self.batch_seed += 1
        return [update_request(kib_blobs(1000, f"batch-{self.tag}-{self.batch_seed}-{i}")) for i in range(count)]

    def write(self, digest: Digest, chunks: list[bytes]) -> None:
        name = upload_name("", str(uuid.uuid4()), digest)

        def requests() -> Iterator[bs_pb2.WriteRequest]:
            offset = 0
            for i, chunk in enumerate(chunks):
                yield bs_pb2.WriteRequest(
                    resource_name=name if i == 0 else "", write_offset=offset, data=chunk, finish_write=i == len(chunks) - 1
                )
                offset += len(chunk)

        assert self.target.bytestream.Write(requests()).committed_size == digest.size_bytes
        self.streamed = digest

    def read_stream(self) -> None:
        assert self.streamed is not None
        total = 0
        for response in self.target.bytestream.Read(bs_pb2.ReadRequest(resource_name=download_name("", self.streamed))):
            total += len(response.data)
        assert total == self.streamed.size_bytes


# (section, calls per round, prepare(workload) -> the call to repeat)
Section = tuple[str, int, Callable[[Workload], Callable[[], object]]]


def _find(w: Workload) -> Callable[[], object]:
    return lambda: w.target.cas.FindMissingBlobs(w.find)


def _batch_update(w: Workload) -> Callable[[], object]:
    batches = iter(w.new_batches(31))
    return lambda: Workload._check_update(w.target.cas.BatchUpdateBlobs(next(batches)))


def _batch_read(w: Workload) -> Callable[[], object]:
    return lambda: w.target.cas.BatchReadBlobs(w.read)


def _write(w: Workload) -> Callable[[], object]:
    blobs = iter([stream_blob(f"stream-{w.tag}-{time.time()}-{i}") for i in range(4)])
    return lambda: w.write(*next(blobs))


def _read(w: Workload) -> Callable[[], object]:
    return w.read_stream


def _get(w: Workload) -> Callable[[], object]:
    return lambda: w.target.ac.GetActionResult(w.get)


SECTIONS: list[Section] = [
    ("FindMissingBlobs 10,000 (half present)", 60, _find),
    ("BatchUpdateBlobs 1,000 x 1 KiB", 31, _batch_update),
    ("BatchReadBlobs 1,000 x 1 KiB", 80, _batch_read),
    ("ByteStream Write 64 MiB", 4, _write),
    ("ByteStream Read 64 MiB", 8, _read),
    ("GetActionResult", 2000, _get),
]


def measure(workload: Workload, section: Section) -> float:
    name, calls, prepare = section
    call = prepare(workload)  # requests built before the counter starts
    call()  # warm: the first call may pay for one-time work
    if name.startswith("BatchUpdate") or name.startswith("ByteStream Write"):
        calls -= 1  # their requests are used up: the warm call took one
    start = cpu_seconds(workload.target.pid)
    for _ in range(calls):
        call()
    return (cpu_seconds(workload.target.pid) - start) / calls


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def report(targets: list[Target], references: list[Target]) -> None:
    """Each target's median CPU per call (and range over rounds), then every ratio of a
    reapi target ("before", "reapi") to each reference (the peers, or "before")."""
    names = [t.name for t in targets]
    pairs = [(t, r) for r in references for t in targets if t is not r and t not in references]
    head = " | ".join(f"{n} ms/call" for n in names)
    ratios = "".join(f" | {t.name}/{r.name}" for t, r in pairs)
    print(f"\n| section | {head}{ratios} |")
    print("|---" * (1 + len(names) + len(pairs)) + "|")
    for name, _, _ in SECTIONS:
        medians = {t.name: statistics.median(t.cpu[name]) for t in targets}
        cells = " | ".join(f"{ms(medians[t.name])} ({ms(min(t.cpu[name]))}-{ms(max(t.cpu[name]))})" for t in targets)
        ratio_cells = "".join(f" | {medians[t.name] / medians[r.name]:.2f}x" for t, r in pairs)
        print(f"| {name} | {cells}{ratio_cells} |", flush=True)


def parse_peer(text: str) -> tuple[str, str, int]:
    name, rest = text.split("=", 1)
    address, pid = rest.rsplit("@", 1)
    return name, address, int(pid)


@contextmanager
def before_server(tree: Path, workdir: Path, config: dict[str, object]) -> Iterator[LoggedProcess]:
    """The reapi server of another source tree (the "before"), with the same config."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "server.toml"
    config_path.write_text(toml_writer.dumps(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tree)}
    process = LoggedProcess(
        "reapi-server (before)", [sys.executable, "-m", "server.app", "--config", str(config_path)],
        workdir / "server.log", env=env, cwd=tree,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def profile(target: Target, seconds: float, workdir: Path) -> None:
    """Sampled stacks of the server per section, by py-spy attached to its process."""
    py_spy = os.environ.get("PY_SPY", "py-spy")
    workload = Workload(target)
    for name, calls, prepare in SECTIONS:
        out = workdir / f"profile-{name.split()[0]}-{(name.split() + [''])[1].strip(',')}.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(target.pid), "--duration", str(int(seconds)), "--rate", "250",
             "--native", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        deadline = time.monotonic() + seconds
        while spy.poll() is None and time.monotonic() < deadline + 5:
            call = prepare(workload)
            for _ in range(calls if not name.startswith(("BatchUpdate", "ByteStream Write")) else 1):
                call()
        spy.wait()
        print(f"{name}: {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sections", help="only the sections whose names start with these, comma-separated")
    parser.add_argument("--stores", choices=["defaults", "memory"], default="defaults")
    parser.add_argument("--no-metrics", action="store_true", help="no [server] http_listen: no metrics collected")
    parser.add_argument("--before", type=Path, help="another reapi source tree to run beside this one")
    parser.add_argument("--peer", action="append", default=[], help="NAME=HOST:PORT@PID of a running peer")
    parser.add_argument("--profile", type=float, default=0, help="py-spy each section for this many seconds")
    parser.add_argument("--profile-dir", type=Path, default=Path("."), help="where --profile writes its stacks")
    parser.add_argument("--dir", type=Path, help="where the servers keep their stores (default: /dev/shm)")
    args = parser.parse_args()
    base = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    workdir = Path(tempfile.mkdtemp(prefix="reapi-bench-cpu-", dir=base))

    def config(run_dir: Path) -> dict[str, object]:
        stores = default_stores(run_dir / "data") if args.stores == "defaults" else MEMORY_STORES
        # Metrics on, as the zero-config server has them: their per-call cost is counted.
        server = {} if args.no_metrics else {"http_listen": "127.0.0.1:0"}
        return server_config(run_dir, stores=stores, server=server)

    if args.sections:
        prefixes = tuple(p.strip() for p in args.sections.split(",") if p.strip())
        SECTIONS[:] = [section for section in SECTIONS if section[0].startswith(prefixes)]
    try:
        with ExitStack() as stack:
            server = stack.enter_context(reapi_server_process(workdir / "after", config(workdir / "after")))
            targets = [Target("reapi", server.address, server.process.pid)]
            if args.profile:
                args.profile_dir.mkdir(parents=True, exist_ok=True)
                profile(targets[0], args.profile, args.profile_dir)
                return
            if args.before is not None:
                process = stack.enter_context(before_server(args.before.resolve(), workdir / "before", config(workdir / "before")))
                address = process.wait_for_log(LISTENING, 30).group(1)
                targets.insert(0, Target("before", address, process.pid))
            targets += [Target(*parse_peer(text)) for text in args.peer]
            print(f"stores: {args.stores} under {workdir}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            workloads = [Workload(t) for t in targets]
            for round_ in range(args.rounds):
                for section in SECTIONS:
                    order = workloads[round_ % len(workloads):] + workloads[: round_ % len(workloads)]
                    for workload in order:
                        workload.target.cpu.setdefault(section[0], []).append(measure(workload, section))
                print(f"round {round_ + 1}/{args.rounds} done; load average {os.getloadavg()[0]:.2f}", flush=True)
            peers = targets[len(targets) - len(args.peer):]
            references = peers if peers else targets[:1] if args.before else []
            report(targets, references)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
