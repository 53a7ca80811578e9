"""The same requests against reapi servers of several source trees, interleaved round by round.

    .venv/bin/python -m tests.benchmarks.bench_trees --tree before=SRC_TREE [--tree mid=SRC_TREE ...]
        [--rounds 15] [--sections storage,execution,core]

For a "before -> after" of a change that promises not to cost speed (issue 8, code
shape): each ``--tree`` (e.g. ``git archive`` of an older commit unpacked somewhere)
runs its own ``server.app`` as a process with that tree first on ``PYTHONPATH``, and
this tree's server runs as ``now``. The client is this process for every target, so
only the server differs, and every server gets the same config (metrics off: no
``http_listen``; log level WARNING). Trees are listed oldest first; the report gives
each target's median over the rounds and, for each neighbouring pair, the median of
the per-round ratios (newer / older) with their range, so a busy machine's swings
between rounds cancel out.

Sections, short versions of bench_storage and bench_execution so that many rounds fit:
- a storage server per target, zero-config stores under /dev/shm (the large-blob
  store capped at ``--large-store`` so that tmpfs holds every target's streams
  at once; the cap evicts alike everywhere): FindMissingBlobs of
  10,000 digests (half present), BatchUpdateBlobs of 1,000 new 1 KiB blobs,
  BatchReadBlobs of 1,000 x 1 KiB, ByteStream Write and Read of 64 MiB, GetActionResult
  of a result with 10 output files, stdout and an output directory; wall time (median
  per call) and server CPU per call (user + system, ``/proc``);
- an execution server per target, memory stores, test bots in this process that
  finish every action at once: Execute-to-COMPLETED sequentially with one bot, and
  throughput with 8 bots and 64 concurrent Executes; wall time and server CPU per action;
- the scheduler core alone (no gRPC): each tree's own ``bench_execution.scheduler_core``
  in a subprocess with that tree on its path, in CPU time of that process.
``--sections`` chooses among storage, execution and core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.config import default_stores
from tests.benchmarks.bench_execution import EXECUTION, MEMORY_STORES, Actions, execute, start_bots, stop
from tests.benchmarks.bench_server_cpu import STREAM_BYTES, Target, Workload, stream_blob
from tests.benchmarks.bench_storage import cpu_seconds
from tests.support import toml_writer
from tests.support.logged_process import LoggedProcess
from tests.support.server_process import LISTENING, server_config

THIS_TREE = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
# The tree's own scheduler_core, timed by this process's CPU clock instead of the wall
# clock (on a shared machine the wall clock also counts the time the process waits
# for a core).
CORE = (
    "import asyncio, re, sys, time\n"
    "time.perf_counter = time.process_time\n"
    "from tests.benchmarks.bench_execution import scheduler_core\n"
    "rows = asyncio.run(scheduler_core(int(sys.argv[1]), int(sys.argv[2])))\n"
    "print(*(re.search(r'\\| ([0-9.]+) us', r).group(1) for r in rows[:2]))\n"
)


@dataclass
class Tree:
    """One source tree's servers and the per-round figures measured against them."""

    name: str
    path: Path
    figures: dict[str, list[float]] = field(default_factory=dict)  # row -> one value per round

    def add(self, row: str, value: float) -> None:
        self.figures.setdefault(row, []).append(value)


@contextmanager
def tree_server(tree: Tree, workdir: Path, config: dict[str, object]) -> Iterator[tuple[str, int]]:
    """``python -m server.app`` of ``tree`` with ``config``; yields its address and pid."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "server.toml"
    config_path.write_text(toml_writer.dumps(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tree.path)}
    process = LoggedProcess(
        f"reapi-server ({tree.name})",
        [sys.executable, "-m", "server.app", "--config", str(config_path), "--log-level", "WARNING"],
        workdir / "server.log", env=env, cwd=tree.path,
    )
    process.start()
    try:
        yield process.wait_for_log(LISTENING, STARTUP_TIMEOUT_S).group(1), process.pid
    finally:
        process.stop()


def timed(calls: int, call: Callable[[], object], pid: int) -> tuple[float, float]:
    """(median wall seconds per call, server CPU seconds per call) over ``calls`` calls."""
    times = []
    cpu = cpu_seconds(pid)
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (cpu_seconds(pid) - cpu) / calls


def storage_round(tree: Tree, workload: Workload) -> None:
    pid = workload.target.pid
    cas, ac = workload.target.cas, workload.target.ac
    sections: list[tuple[str, int, Callable[[], object]]] = [
        ("FindMissingBlobs 10,000", 20, lambda: cas.FindMissingBlobs(workload.find)),
        ("BatchReadBlobs 1,000 x 1 KiB", 20, lambda: cas.BatchReadBlobs(workload.read)),
        ("GetActionResult", 500, lambda: ac.GetActionResult(workload.get)),
    ]
    batches = iter(workload.new_batches(6))
    sections.insert(1, ("BatchUpdateBlobs 1,000 x 1 KiB", 6, lambda: Workload._check_update(cas.BatchUpdateBlobs(next(batches)))))
    blobs = iter([stream_blob(f"trees-{workload.tag}-{time.time()}-{i}") for i in range(2)])
    sections += [
        ("ByteStream Write 64 MiB", 2, lambda: workload.write(*next(blobs))),
        ("ByteStream Read 64 MiB", 2, workload.read_stream),
    ]
    for name, calls, call in sections:
        wall, cpu = timed(calls, call, pid)
        tree.add(f"{name}: wall", wall)
        tree.add(f"{name}: server CPU", cpu)


async def execution_round(tree: Tree, address: str, pid: int, serial: int, sequential: int, concurrent: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        digests = await Actions(channel, prefix=f"{tree.name}-{serial}").make(sequential + 10 + concurrent)
        stub = re_grpc.ExecutionStub(channel)
        _, tasks = await start_bots(channel, 1, prefix=f"seq-{serial}")
        for digest in digests[:10]:  # warm-up
            await execute(stub, digest)
        times = []
        cpu = cpu_seconds(pid)
        for digest in digests[10 : 10 + sequential]:
            start = time.perf_counter()
            await execute(stub, digest)
            times.append(time.perf_counter() - start)
        tree.add("Execute-to-COMPLETED, sequential: wall", statistics.median(times))
        tree.add("Execute-to-COMPLETED, sequential: server CPU", (cpu_seconds(pid) - cpu) / sequential)
        await stop(tasks)
        _, tasks = await start_bots(channel, 8, prefix=f"tput-{serial}")
        pending = iter(digests[10 + sequential :])

        async def client() -> None:
            for digest in pending:
                await execute(stub, digest)

        cpu, start = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(64)))
        elapsed = time.perf_counter() - start
        tree.add("Execute, 8 bots, 64 concurrent: wall per action", elapsed / concurrent)
        tree.add("Execute, 8 bots, 64 concurrent: server CPU per action", (cpu_seconds(pid) - cpu) / concurrent)
        await stop(tasks)


def core_round(tree: Tree, queued: int, sessions: int) -> None:
    """The tree's own scheduler core, in its own process (the API differs between trees)."""
    env = {**os.environ, "PYTHONPATH": str(tree.path)}
    out = subprocess.run([sys.executable, "-c", CORE, str(queued), str(sessions)], cwd=tree.path, env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    tree.add(f"scheduler core: submit, up to {queued:,} queued", float(out[0]) / 1e6)
    tree.add(f"scheduler core: report + next lease, {sessions} sessions", float(out[1]) / 1e6)


def value(row: str, seconds: float) -> str:
    if "scheduler core" in row:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def report(trees: list[Tree], extra_pairs: list[str]) -> None:
    """Medians per target, then median (min-max) of the per-round ratios of each newer
    target to its older neighbour, and of any ``NEW/OLD`` pair asked for."""
    by_name = {t.name: t for t in trees}
    pairs = list(zip(trees, trees[1:]))
    pairs += [(by_name[old], by_name[new]) for new, old in (text.split("/", 1) for text in extra_pairs)]
    head = " | ".join(t.name for t in trees) + "".join(f" | {new.name} / {old.name}" for old, new in pairs)
    print(f"\n| row (median over rounds; ratio: median of per-round ratios, range) | {head} |")
    print("|---" * (1 + len(trees) + len(pairs)) + "|")
    for row in trees[0].figures:
        cells = " | ".join(value(row, statistics.median(t.figures[row])) for t in trees)
        ratio_cells = ""
        for old, new in pairs:
            ratios = sorted(n / o for n, o in zip(new.figures[row], old.figures[row]) if o > 0)
            ratio_cells += f" | {statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else " | -"
        print(f"| {row} | {cells}{ratio_cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="an older source tree, oldest first")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pair", action="append", default=[], metavar="NEW/OLD",
                        help="also report this ratio (neighbours are always reported), e.g. now/before")
    parser.add_argument("--sequential", type=int, default=100, help="sequential Executes per round")
    parser.add_argument("--concurrent", type=int, default=600, help="Executes per round in the throughput section")
    parser.add_argument("--core-queued", type=int, default=20_000)
    parser.add_argument("--core-sessions", type=int, default=100)
    parser.add_argument("--large-store", default="512MiB", help="max_size of the zero-config large-blob store")
    parser.add_argument("--json", type=Path, help="also write every per-round figure here")
    parser.add_argument("--sections", default="storage,execution,core", help="which of storage, execution, core")
    args = parser.parse_args()
    sections = {name.strip() for name in args.sections.split(",")}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers and remove the stores
    trees = [Tree(name, Path(path).resolve()) for name, path in (text.split("=", 1) for text in args.tree)]
    trees.append(Tree("now", THIS_TREE))
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    workdir = Path(tempfile.mkdtemp(prefix="reapi-bench-trees-", dir=base))
    loads = [os.getloadavg()[0]]
    try:
        with ExitStack() as stack:
            storage: dict[str, Workload] = {}
            execution: dict[str, tuple[str, int]] = {}
            for tree in trees if {"storage", "execution"} & sections else []:
                run = workdir / tree.name
                stores = default_stores(run / "storage" / "data")
                stores["cas-large"]["max_size"] = args.large_store
                address, pid = stack.enter_context(tree_server(tree, run / "storage", server_config(run / "storage", stores=stores)))
                storage[tree.name] = Workload(Target(tree.name, address, pid))
                execution[tree.name] = stack.enter_context(tree_server(
                    tree, run / "execution", server_config(run / "execution", stores=MEMORY_STORES, execution=EXECUTION)))
            print(f"{len(trees)} targets: {', '.join(f'{t.name}={t.path}' for t in trees)}; stores under {workdir}; "
                  f"{os.cpu_count()} cores; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
            for round_ in range(args.rounds):
                order = trees[round_ % len(trees):] + trees[: round_ % len(trees)]
                for tree in order if "storage" in sections else []:
                    storage_round(tree, storage[tree.name])
                for tree in order if "execution" in sections else []:
                    address, pid = execution[tree.name]
                    asyncio.run(execution_round(tree, address, pid, round_, args.sequential, args.concurrent))
                if "core" in sections:
                    for tree in order:
                        core_round(tree, args.core_queued, args.core_sessions)
                loads.append(os.getloadavg()[0])
                print(f"round {round_ + 1}/{args.rounds} done ({time.strftime('%H:%M:%S', time.gmtime())} UTC); "
                      f"load average {loads[-1]:.2f}", flush=True)
        report(trees, args.pair)
        if args.json:
            args.json.write_text(json.dumps({"loads": loads, "trees": {t.name: t.figures for t in trees}}, indent=1))
        print(f"\nload average (1 min) over the sitting: {min(loads):.1f}-{max(loads):.1f}, median {statistics.median(loads):.1f}; "
              f"{args.rounds} rounds; ByteStream blobs {STREAM_BYTES >> 20} MiB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
