"""Issue 11, acceptances 2 and 3 at full size, through deploy/replicated/up.sh.

    .venv/bin/python -m tests.benchmarks.bench_replicated [--cc-libraries 250] [--jobs 8]
        [--kill-after 0.3] [--redis-pause 15] [--idle 30] [--skip-bazel] [--skip-redis]

- First, the CPU the started farm uses per second doing nothing (``--idle`` s):
  heartbeats, ticks, pub/sub pings, the fixed cost under every per-action figure.
- Bazel (4.2.3) builds tests/benchmarks/bench_worker.py's generated C++ workspace
  (``--cc-libraries`` libraries + a binary: one action each, plus the link) with
  every action remote through up.sh's endpoint; when ``--kill-after`` of the
  actions have run, frontend-1 gets SIGKILL. Reported: the build's result, its
  process summary (every action remote?), the wall time, how many actions ran more
  than once (a result a dead frontend was storing is queued again), then after
  ``bazel clean`` the rebuild's summary (all cache hits?).
- Redis gets SIGSTOP for ``--redis-pause`` seconds while a client calls
  GetOperation (which reads the scheduler state in Redis) every 0.25 s through the
  endpoint; reported: the statuses, the slowest call (how fast UNAVAILABLE comes),
  and how long after SIGCONT Redis answers a call again.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc

from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.benchmarks.bench_execution import cpu_seconds
from tests.benchmarks.bench_worker import generate_cc_workspace
from tests.conftest import REPO_ROOT

UP = REPO_ROOT / "deploy" / "replicated" / "up.sh"
DOWN = REPO_ROOT / "deploy" / "replicated" / "down.sh"


def actions_run(root: Path) -> int:
    return sum((root / f"worker-{n}.log").read_text().count(": OK (ran") for n in (1, 2))


class CpuSampler:
    """CPU seconds of every process up.sh started, the last value seen of each (a killed one keeps its last)."""

    KINDS = ("redis", "storage", "frontend", "haproxy", "worker")

    def __init__(self, root: Path) -> None:
        self.pids = {path.stem: int(path.read_text()) for path in root.glob("*.pid")}
        self.seen: dict[str, float] = {}
        self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                self.seen[name] = cpu_seconds(pid)
            except (OSError, ValueError):
                pass  # gone: keep its last value

    def by_kind(self, since: dict[str, float], per: int) -> str:
        kinds = dict.fromkeys(self.KINDS, 0.0)
        for name, seconds in self.seen.items():
            kinds[name.split("-")[0]] += seconds - since.get(name, 0.0)
        return ", ".join(f"{kind} {seconds / per * 1000:.1f}" for kind, seconds in kinds.items())


def bazel_rows(root: Path, endpoint: str, libraries: int, jobs: int, kill_after: float) -> list[str]:
    from tests.support.bazel import BazelInstallation, remote_execution_flags
    from tests.support.bazel_summary import REMOTE, REMOTE_CACHE_HIT

    installation = BazelInstallation.find(root / "bazel")
    source = root / "cc-source"
    generate_cc_workspace(source, libraries)
    ws = installation.workspace(source, root / "cc-ws")
    flags = [*remote_execution_flags(endpoint), f"--jobs={jobs}"]
    threshold = int(kill_after * (libraries + 1))
    killed: list[float] = []
    done = threading.Event()
    cpu = CpuSampler(root)

    def killer() -> None:
        while actions_run(root) < threshold and not done.is_set():
            cpu.sample()
            time.sleep(0.1)
        if not done.is_set():
            os.kill(int((root / "frontend-1.pid").read_text()), signal.SIGKILL)
            killed.append(time.monotonic())
        while not done.wait(0.5):
            cpu.sample()

    try:
        ws.build("//:main", flags=["--nobuild"])
        thread = threading.Thread(target=killer)
        cpu.sample()
        first_cpu = dict(cpu.seen)
        thread.start()
        start = time.monotonic()
        try:
            first = ws.build("//:main", flags=flags)
        finally:
            done.set()
            thread.join()
        wall = time.monotonic() - start
        cpu.sample()
        build_cpu = cpu.by_kind(first_cpu, first.summary.actions)
        ran = actions_run(root)
        ws.clean()
        again_cpu = dict(cpu.seen)
        start = time.monotonic()
        again = ws.build("//:main", flags=flags)
        rebuild_wall = time.monotonic() - start
        cpu.sample()
        rebuild_cpu = cpu.by_kind(again_cpu, again.summary.actions)
    finally:
        installation.shutdown_all()
    summary = first.summary
    kill_note = f"frontend-1 killed after {threshold} actions ran" if killed else "frontend-1 not killed (too late)"
    return [
        f"| Bazel C++ build, {summary.actions} actions, through up.sh's endpoint, {kill_note} | "
        f"exit {first.exit_code}; {summary.line}; {summary.count(REMOTE)} of {summary.actions} remote; "
        f"{wall:.0f} s; {ran - summary.count(REMOTE)} action(s) ran twice (within the retry budget) |",
        f"| that build: CPU ms per action | {build_cpu} |",
        f"| after bazel clean, the same build | {again.summary.line}; "
        f"{again.summary.count(REMOTE_CACHE_HIT)} of {again.summary.actions} cache hits; {rebuild_wall:.0f} s |",
        f"| the rebuild: CPU ms per action | {rebuild_cpu} |",
    ]


def idle_row(root: Path, seconds: float) -> str:
    """What the farm costs doing nothing (heartbeats, ticks, pings): the floor under every per-action figure."""
    cpu = CpuSampler(root)
    since = dict(cpu.seen)
    time.sleep(seconds)
    cpu.sample()
    return f"| idle for {seconds:.0f} s: CPU ms per second | {cpu.by_kind(since, int(seconds))} |"


def redis_pause_rows(root: Path, endpoint: str, seconds: float) -> list[str]:
    """Calls that need Redis while it is stopped: how fast they fail, how fast they recover."""
    channel = grpc.insecure_channel(endpoint.removeprefix("grpc://"))
    operations = lro_grpc.OperationsStub(channel)
    request = lro_pb2.GetOperationRequest(name="operations/unknown")

    def call() -> tuple[float, grpc.StatusCode]:
        start = time.monotonic()
        try:
            operations.GetOperation(request, timeout=60)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        return time.monotonic() - start, code

    call()  # connected
    pid = int((root / "redis.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    paused = time.monotonic()
    failures: list[tuple[float, grpc.StatusCode]] = []
    while time.monotonic() - paused < seconds:
        failures.append(call())
        time.sleep(0.25)
    os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    while True:
        took, code = call()
        if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):  # NOT_FOUND: Redis answered
            break
        time.sleep(0.05)
    recovered = time.monotonic() - resumed
    channel.close()
    codes = {code.name for _, code in failures}
    times = sorted(t for t, _ in failures)
    return [
        f"| Redis stopped (SIGSTOP) {seconds:.0f} s: {len(failures)} GetOperation calls meanwhile | statuses "
        f"{', '.join(sorted(codes))}; slowest {times[-1] * 1000:.0f} ms, median {statistics.median(times) * 1000:.1f} ms |",
        f"| after SIGCONT, the first call Redis answers | {recovered * 1000:.0f} ms later |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cc-libraries", type=int, default=250)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--kill-after", type=float, default=0.3, help="fraction of the actions run before the kill")
    parser.add_argument("--redis-pause", type=float, default=15.0)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle farm's CPU to measure first")
    parser.add_argument("--skip-bazel", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    print("| measurement | result |\n|---|---|", flush=True)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None) as tmp:
        root = Path(tmp) / "replicated"
        os.chmod(tmp, 0o711)  # the action user passes through to the workers' exec roots
        subprocess.run([str(UP), str(root)], check=True)
        try:
            endpoint = (root / "endpoint").read_text().strip()
            print(idle_row(root, args.idle), flush=True)
            if not args.skip_redis:
                print(*redis_pause_rows(root, endpoint, args.redis_pause), sep="\n", flush=True)
            if not args.skip_bazel:
                print(*bazel_rows(root, endpoint, args.cc_libraries, args.jobs, args.kill_after), sep="\n", flush=True)
        finally:
            subprocess.run([str(DOWN), str(root)], check=True)


if __name__ == "__main__":
    main()
