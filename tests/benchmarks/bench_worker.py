"""Remote execution end to end: a reapi-server process, a reapi-worker process, the client here.

    .venv/bin/python -m tests.benchmarks.bench_worker [--sequential 200] [--concurrent 500]
        [--files 1000] [--cc-libraries 250] [--remote-jobs 4] [--bazel-rounds 2] [--remote-flag FLAG ...] [--skip-bazel] [--dir PATH]

Both processes run as users start them (``python -m server.app --config``, ``python -m
worker.app``), the server with the zero-config stores, all under /dev/shm
when it exists (``--dir`` to choose). The client is the synchronous gRPC client, as a
build tool's would be. Every action is new (a fresh salt, ``skip_cache_lookup``), so
each row measures real executions; uploads happen before the clock starts. Rows
(targets from issue 4, acceptance 5):

- ``/bin/true`` sequential: Execute until the final Operation, median and p90 ms;
  the worker's own share from ExecutedActionMetadata (queue -> worker, input fetch,
  run, upload);
- 50 concurrent Executes (50 client threads) of ``/bin/true``: actions/s;
- an action with ``--files`` small input files (100 per directory): cold (contents
  the worker has never seen) and warm (same input root, worker cache filled), median ms;
- real Bazel (4.2.3) building a generated C++ workspace (``--cc-libraries`` libraries
  and a binary using them all: a compile action each, a compile and a link for the
  binary): wall time of a local build vs a remote-execution build against the same
  server and worker (concurrency = CPU count), from clean, with the CPU that Bazel's
  server, the actions (compilers), reapi-server and reapi-worker used meanwhile;
  ``--bazel-rounds`` times with new sources each round: round 1 in a fresh Bazel
  server (its JVM still compiling its remote client), later ones warm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.config import default_stores
from tests.support.server_process import reapi_server_process, server_config
from tests.support.worker_process import reapi_worker_process

Req = re_pb2.BatchUpdateBlobsRequest.Request
BATCH_BYTES = 3 << 20


def stores(root: Path) -> dict[str, dict[str, Any]]:
    """The zero-config stores (packed small blobs and AC, disk for large blobs) under root."""
    return {name: spec for name, spec in default_stores(root).items() if name != "assets"}


class Client:
    """Uploads actions and runs them with Execute, as a build tool does."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.execution = re_grpc.ExecutionStub(self.channel)
        self.platform = re_pb2.Platform(properties=[re_pb2.Platform.Property(name="OSFamily", value="linux")])

    def upload(self, blobs: dict[Digest, bytes]) -> None:
        batch: list[Req] = []
        size = 0
        for digest, data in blobs.items():
            if batch and size + len(data) > BATCH_BYTES:
                self._send(batch)
                batch, size = [], 0
            batch.append(Req(digest=digest.to_proto(), data=data))
            size += len(data)
        if batch:
            self._send(batch)

    def _send(self, batch: list[Req]) -> None:
        response = self.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=batch))
        assert all(r.status.code == 0 for r in response.responses), response

    def command(self, argv: list[str]) -> Digest:
        data = re_pb2.Command(arguments=argv, platform=self.platform).SerializeToString()
        digest = Digest.of(data)
        self.upload({digest: data})
        return digest

    def action(self, command: Digest, root: Digest) -> Digest:
        """A new Action (fresh salt), uploaded."""
        action = re_pb2.Action(command_digest=command.to_proto(), input_root_digest=root.to_proto(),
                               do_not_cache=True, salt=os.urandom(16), platform=self.platform)
        data = action.SerializeToString()
        digest = Digest.of(data)
        self.upload({digest: data})
        return digest

    def execute(self, action: Digest) -> re_pb2.ExecuteResponse:
        last = None
        for operation in self.execution.Execute(
                re_pb2.ExecuteRequest(action_digest=action.to_proto(), skip_cache_lookup=True)):
            last = operation
        assert last is not None and last.done
        response = re_pb2.ExecuteResponse()
        last.response.Unpack(response)
        assert response.status.code == 0 and response.result.exit_code == 0, response
        return response


def tree(files: int, per_dir: int = 100) -> tuple[Digest, dict[Digest, bytes]]:
    """An input root of ``files`` unique small files, ``per_dir`` to a directory."""
    blobs: dict[Digest, bytes] = {}
    root = re_pb2.Directory()
    for d in range((files + per_dir - 1) // per_dir):
        directory = re_pb2.Directory()
        for f in range(min(per_dir, files - d * per_dir)):
            data = os.urandom(64) + f"file {d}/{f}\n".encode()
            digest = Digest.of(data)
            blobs[digest] = data
            directory.files.add(name=f"f{f:04d}.txt", digest=digest.to_proto())
        data = directory.SerializeToString()
        digest = Digest.of(data)
        blobs[digest] = data
        root.directories.add(name=f"d{d:03d}", digest=digest.to_proto())
    data = root.SerializeToString()
    digest = Digest.of(data)
    blobs[digest] = data
    return digest, blobs


def ms(stamp: Any) -> float:
    return float(stamp.ToNanoseconds()) / 1e6


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return (time.perf_counter() - started) * 1000, result


def median_p90(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):7.2f} ms (p90 {ordered[int(len(ordered) * 0.9)]:.2f})"


def bench_sequential(client: Client, count: int) -> list[tuple[str, str]]:
    command = client.command(["/bin/true"])
    empty = Digest.of(b"")
    client.upload({Digest.of(re_pb2.Directory().SerializeToString()): re_pb2.Directory().SerializeToString()})
    root = Digest.of(re_pb2.Directory().SerializeToString())
    del empty
    for _ in range(10):  # warm up connections and caches
        client.execute(client.action(command, root))
    times, shares = [], []
    for _ in range(count):
        action = client.action(command, root)
        elapsed, response = timed(lambda: client.execute(action))
        times.append(elapsed)
        m = response.result.execution_metadata
        shares.append((ms(m.worker_start_timestamp) - ms(m.queued_timestamp),
                       ms(m.input_fetch_completed_timestamp) - ms(m.input_fetch_start_timestamp),
                       ms(m.execution_completed_timestamp) - ms(m.execution_start_timestamp),
                       ms(m.output_upload_completed_timestamp) - ms(m.output_upload_start_timestamp)))
    parts = ", ".join(f"{name} {statistics.median(s[i] for s in shares):.2f}"
                      for i, name in enumerate(("queue->worker", "fetch", "run", "upload")))
    return [(f"/bin/true sequential, Execute to result ({count})", median_p90(times)),
            ("  worker share, median ms", parts)]


def bench_concurrent(client: Client, count: int, parallel: int = 50) -> list[tuple[str, str]]:
    command = client.command(["/bin/true"])
    root = Digest.of(re_pb2.Directory().SerializeToString())
    actions = [client.action(command, root) for _ in range(count)]
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(client.execute, [client.action(command, root) for _ in range(parallel)]))  # warm up
        started = time.perf_counter()
        list(pool.map(client.execute, actions))
        elapsed = time.perf_counter() - started
    return [(f"/bin/true, {parallel} concurrent Executes ({count} actions)", f"{count / elapsed:7.0f} actions/s")]


def bench_input_files(client: Client, files: int, runs: int = 7) -> list[tuple[str, str]]:
    command = client.command(["/bin/true"])
    cold: list[tuple[float, re_pb2.ExecuteResponse]] = []
    warm: list[tuple[float, re_pb2.ExecuteResponse]] = []
    for _ in range(runs):
        root, blobs = tree(files)
        client.upload(blobs)
        action = client.action(command, root)
        cold.append(timed(lambda: client.execute(action)))
        for _ in range(2):
            action = client.action(command, root)
            warm.append(timed(lambda: client.execute(action)))
    rows = []
    for label, runs_ in (("cold", cold), ("warm", warm)):
        rows.append((f"{files} small input files, {label} worker cache", median_p90([t for t, _ in runs_])))
        metas = [r.result.execution_metadata for _, r in runs_]
        fetch = statistics.median(ms(m.input_fetch_completed_timestamp) - ms(m.input_fetch_start_timestamp) for m in metas)
        before = statistics.median(ms(m.worker_start_timestamp) - ms(m.queued_timestamp) for m in metas)
        rows.append(("  worker share, median ms", f"queue->worker {before:.2f}, input fetch {fetch:.2f}"))
    return rows


def generate_cc_workspace(root: Path, libraries: int) -> None:
    """``libraries`` cc_library targets in a chain of small packages, and one binary using them all."""
    root.mkdir(parents=True)
    (root / "WORKSPACE").write_text('workspace(name = "bench")\n')
    deps = []
    for i in range(libraries):
        pkg = root / f"lib{i:03d}"
        pkg.mkdir()
        (pkg / f"lib{i:03d}.h").write_text(f"int lib{i:03d}(int x);\n")
        body = "\n".join(f"  x = (x * {j + 3} + {i}) % 1000003;" for j in range(40))
        (pkg / f"lib{i:03d}.cc").write_text(
            f'#include "lib{i:03d}/lib{i:03d}.h"\n#include <string>\n#include <vector>\n'
            f"int lib{i:03d}(int x) {{\n  std::vector<std::string> v(3, \"x\");\n{body}\n  return x + (int)v.size();\n}}\n")
        (pkg / "BUILD").write_text(
            f'cc_library(name = "lib{i:03d}", srcs = ["lib{i:03d}.cc"], hdrs = ["lib{i:03d}.h"], '
            f'visibility = ["//visibility:public"])\n')
        deps.append(f'"//lib{i:03d}"')
    calls = "\n".join(f"  x = lib{i:03d}(x);" for i in range(libraries))
    includes = "\n".join(f'#include "lib{i:03d}/lib{i:03d}.h"' for i in range(libraries))
    (root / "main.cc").write_text(f"#include <cstdio>\n{includes}\nint main() {{\n  int x = 1;\n{calls}\n"
                                  f'  std::printf("%d\\n", x);\n  return 0;\n}}\n')
    (root / "BUILD").write_text(f'cc_binary(name = "main", srcs = ["main.cc"], deps = [{", ".join(deps)}])\n')


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU a process has used so far (Linux /proc); with ``children``, that
    of its descendants it has waited for instead (the compilers of a build)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def mark_round(workspace: Path, round_number: int) -> None:
    """Change every source file, so each action of the next builds is new to the remote cache."""
    for source in [*workspace.glob("lib*/*.cc"), workspace / "main.cc"]:
        source.write_text(source.read_text() + f"// round {round_number}\n")


def bench_bazel(server_url: str, pids: dict[str, int], workdir: Path, libraries: int,
                remote_jobs: int, rounds: int = 2, extra_remote_flags: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Local vs remote builds from clean, ``rounds`` times (new sources each round).

    Round 1 runs in a fresh Bazel server, whose JVM has not yet compiled its remote
    execution client: that costs it seconds of CPU once per Bazel server, on cores the
    compilers need. Later rounds show the steady state a developer's long-lived Bazel
    server is in. The CPU row splits the work: Bazel's server (JVM), the actions
    (compilers, run by Bazel locally or by the worker remotely), reapi-server, reapi-worker."""
    from tests.support.bazel import BazelInstallation, BazelUnavailable, remote_execution_flags

    try:
        installation = BazelInstallation.find(workdir / "bazel")
    except BazelUnavailable as exc:
        return [("Bazel C++ workspace", f"skipped: {exc}")]
    source = workdir / "cc-source"
    generate_cc_workspace(source, libraries)
    ws = installation.workspace(source, workdir / "cc-ws")
    remote_flags = [*remote_execution_flags(server_url), f"--jobs={remote_jobs}", *extra_remote_flags]
    try:
        ws.build("//:main", flags=["--nobuild"])  # start the server, load and configure once
        bazel_pid = int(str(ws.info("server_pid")))
        rows = []
        for round_number in range(1, rounds + 1):
            if round_number > 1:
                mark_round(ws.root, round_number)
            server_state = "fresh Bazel server" if round_number == 1 else f"warm Bazel server (round {round_number})"
            walls = []
            for label, flags, runner in (("local (default strategy)", [], bazel_pid),
                                         (" ".join(["remote execution", f"--jobs={remote_jobs}", *extra_remote_flags]), remote_flags, pids["reapi-worker"])):
                ws.clean()
                ws.build("//:main", flags=[*flags, "--nobuild"])
                watched = {"Bazel server": bazel_pid, **pids}
                before = {name: cpu_seconds(pid) for name, pid in watched.items()}
                actions_before = cpu_seconds(runner, children=True)
                elapsed, run = timed(lambda: ws.build("//:main", flags=flags))
                used = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
                used["actions"] = cpu_seconds(runner, children=True) - actions_before
                walls.append(elapsed)
                rows.append((f"Bazel C++ build, {run.summary.actions} actions: {label}, {server_state}",
                             f"{elapsed / 1000:7.1f} s"))
                rows.append(("  CPU used meanwhile by", ", ".join(f"{name} {seconds:.1f} s" for name, seconds in used.items())))
            rows.append((f"  remote / local wall time, {server_state}", f"{walls[1] / walls[0]:7.2f}x"))
        return rows
    finally:
        installation.shutdown_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=500)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--cc-libraries", type=int, default=250)
    parser.add_argument("--remote-jobs", type=int, default=4,
                        help="Bazel --jobs for the remote build (more than the worker's slots hides round trips)")
    parser.add_argument("--bazel-rounds", type=int, default=2,
                        help="local + remote builds this many times; round 1 in a fresh Bazel server")
    parser.add_argument("--remote-flag", action="append", default=[],
                        help="an extra Bazel flag for the remote build (repeat), e.g. --remote_download_minimal")
    parser.add_argument("--skip-bazel", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    parser.add_argument("--worker-config", action="append", default=[], metavar="KEY=VALUE",
                        help='a [worker] key for the worker (repeat), e.g. sandbox="process" or run_as="root"')
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-worker-", dir=args.dir))
    os.chmod(workdir, 0o711)  # the action user passes through to its exec roots (docs/WORKER.md)
    rows: list[tuple[str, str]] = []
    try:
        config = server_config(workdir / "server", stores=stores(workdir / "server" / "data"))
        worker_config = workdir / "worker.toml"
        worker_config.write_text("[worker]\n" + "".join(f"{line}\n" for line in args.worker_config))
        with (reapi_server_process(workdir / "server", config) as server,
              reapi_worker_process(workdir / "worker", server.address,
                                   extra_args=["--config", str(worker_config)]) as worker):
            client = Client(server.address)
            rows += bench_sequential(client, args.sequential)
            rows += bench_concurrent(client, args.concurrent)
            rows += bench_input_files(client, args.files)
            if not args.skip_bazel:
                pids = {"reapi-server": server.process.pid, "reapi-worker": worker.pid}
                rows += bench_bazel(server.url, pids, workdir, args.cc_libraries, args.remote_jobs, args.bazel_rounds,
                                    args.remote_flag)
            problems = server.problems() + worker.problems()
            log = worker.log_text()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    sandbox = next((line.split("sandbox: ", 1)[1] for line in log.splitlines() if "sandbox: " in line), "none")
    print(f"worker sandbox: {sandbox}\n")
    print(f"{'what':<{width}}  result")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if problems:
        print("\nerrors logged by the server or worker:\n" + "\n".join(problems[:20]))


if __name__ == "__main__":
    main()
