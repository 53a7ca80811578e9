"""Locality vs fifo dispatch: a Bazel C++ build over 3 workers with cold caches, interleaved.

    .venv/bin/python -m tests.benchmarks.bench_locality [--rounds 2] [--components 6] [--libraries 120]
        [--headers 12] [--header-kib 16] [--jobs 12[,48...]] [--dir PATH] [--state memory|redis]
        [--link-rate 100mbit] [--before DIR] [--counts]

The workspace: ``--components`` components, each a header library of ``--headers``
headers of ``--header-kib`` KiB (a project's big shared headers: generated protocol
headers, a vendored library) and a tool (a binary); ``--libraries`` small libraries,
library ``i`` using component ``i mod components``; tool ``t`` links the ``t``-th
block of libraries, so each tool's libraries use every component (as a service links
libraries built on different big header sets) and Bazel's queue mixes them. A
library's compile action's inputs are its own source and header plus its
component's headers; a tool's link action's are its block's object files. Bazel
builds ``//...``.

Per build: a new reapi-server (zero-config stores, ``[execution] dispatch`` as
measured; with ``--state redis``, its scheduler state in a new redis-server) and three new reapi-workers (concurrency 1 each, empty caches, metrics on
an HTTP port), Bazel from clean with ``--jobs`` (several values: each dispatch at
each, interleaved, a row ``dispatch@jobs``; a ``--jobs`` well above the window plus
the free slots makes a build's queue deep: locality.deep_queue). Rows per dispatch, one line per
build, in the order run (``locality``, ``fifo``, then ``fifo``, ``locality``, ...):
wall time, the input bytes the workers fetched from the server's CAS
(``reapi_worker_input_bytes_fetched_total``, summed over the three) and how the
actions split between them, and the CPU seconds the server (and redis-server) spent
during the build (on this 2-core host it competes with the compilers); then the
medians and the ratio. Each dispatch first builds once, untimed: a sitting's first
builds are slow whatever their dispatch, and the interleaved order would always give
them to the same one.

``--link-rate 100mbit``: the workers run in their own network namespace and reach the
server over a link limited to that rate each way (shaped_link.py; root), as a farm's
workers reach its CAS across a network; on loopback the bytes a placement saves cost
almost nothing.

``--counts``: per dispatch, what its timed builds cost the control plane, counted
(locality_counts.py): gRPC calls per method, Redis commands, scripts by name, the CPU
of the server and redis-server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.bench_execution import cpu_seconds
from tests.benchmarks.locality_counts import BuildCounter, Counts, report
from tests.benchmarks.bench_worker import stores
from tests.benchmarks.locality_trace import breakdown, trace_build
from tests.benchmarks.shaped_link import ShapedLink, shaped_link
from tests.support.bazel import BazelInstallation, BazelUnavailable, BazelWorkspace, remote_execution_flags
from tests.support.metrics_scrape import scrape
from tests.support.redis_process import RedisProcess
from tests.support.server_process import reapi_server_process, server_config
from tests.support.worker_process import start_worker, stop_worker

METRICS = re.compile(r"metrics: (http://\S+/metrics)")


def generate_workspace(root: Path, components: int, libraries: int, headers: int, header_kib: int) -> None:
    root.mkdir(parents=True)
    (root / "WORKSPACE").write_text('workspace(name = "locality")\n')
    filler = "// " + "x" * 76 + "\n"
    members: dict[int, list[int]] = {t: [] for t in range(components)}
    for i in range(libraries):
        c = i % components
        members[i * components // libraries].append(i)
        package = root / f"lib{i:03d}"
        package.mkdir()
        includes = "".join(f'#include "comp{c}/h{h}.h"\n' for h in range(headers))
        calls = " + ".join(f"comp{c}_h{h}(x)" for h in range(headers))
        (package / f"lib{i:03d}.h").write_text(f"int lib{i:03d}(int x);\n")
        (package / f"lib{i:03d}.cc").write_text(
            f'#include "lib{i:03d}/lib{i:03d}.h"\n{includes}int lib{i:03d}(int x) {{ return {calls}; }}\n')
        (package / "BUILD").write_text(
            f'cc_library(name = "lib{i:03d}", srcs = ["lib{i:03d}.cc"], hdrs = ["lib{i:03d}.h"], '
            f'deps = ["//comp{c}"], visibility = ["//visibility:public"])\n')
    for c in range(components):
        package = root / f"comp{c}"
        package.mkdir()
        for h in range(headers):
            body = filler * (header_kib * 1024 // len(filler))
            (package / f"h{h}.h").write_text(f"#pragma once\n{body}inline int comp{c}_h{h}(int x) {{ return x + {h}; }}\n")
        includes = "".join(f'#include "lib{i:03d}/lib{i:03d}.h"\n' for i in members[c])
        calls = "".join(f"  x = lib{i:03d}(x) % 1000003;\n" for i in members[c])
        (package / "tool.cc").write_text(f"#include <cstdio>\n{includes}int main() {{\n  int x = 1;\n{calls}"
                                         '  std::printf("%d\\n", x);\n  return 0;\n}\n')
        deps = ", ".join(f'"//lib{i:03d}"' for i in members[c])
        (package / "BUILD").write_text(
            f'cc_library(name = "comp{c}", hdrs = glob(["*.h"]), visibility = ["//visibility:public"])\n'
            f'cc_binary(name = "tool", srcs = ["tool.cc"], deps = [{deps}])\n')


@dataclass
class Build:
    """One build's wall seconds, input bytes each worker fetched, actions each ran, and
    the CPU seconds the server (and redis-server) spent on it: on this small host the
    control plane's CPU competes with the compilers, so it shows in wall time."""

    wall: float
    fetched: list[int]
    actions: list[int]
    control_cpu: float
    counts: Counts | None = None  # with --counts


def one_build(ws: BazelWorkspace, base: Path, dispatch: str, jobs: int,
              state: str = "memory", cold_bazel: bool = False,
              trace: bool = False, link: ShapedLink | None = None, before: str = "",
              count: bool = False) -> Build:
    """A build from clean.
    ``dispatch``: "fifo", "locality", "locality-nohold" (``locality_wait_for_holder = false``),
    "locality-backlogN" (``locality_holder_backlog = N``) or "locality+W" (``locality_wait`` = W seconds).
    ``cold_bazel``: Bazel's server is shut down first, so the build runs on a server just
    started (a CI machine's case: its first actions come at a slower, uneven rhythm).
    ``trace``: print where the fetched bytes went (locality_trace.py), read back from the server.
    ``link``: the workers reach the server over this rate-limited link (shaped_link.py).
    ``count``: count the timed build's gRPC calls, Redis commands and scripts (locality_counts.py).
    A dispatch ending in "-before" runs the server from the source tree ``before`` (on
    PYTHONPATH; PYTHONSAFEPATH, or ``python -m`` would import this checkout first)."""
    workdir = Path(tempfile.mkdtemp(prefix="locality-", dir=base))
    os.chmod(workdir, 0o711)  # the action user passes through to exec roots
    workers = []
    redis = RedisProcess(workdir / "redis") if state == "redis" else None
    try:
        env = {"PYTHONPATH": before, "PYTHONSAFEPATH": "1"} if dispatch.endswith("-before") else None
        if env is not None and not before:
            raise SystemExit(f"mode {dispatch} needs --before DIR")
        mode, _, wait = dispatch.removesuffix("-before").partition("+")
        mode, _, backlog = mode.partition("-backlog")
        execution: dict[str, object] = {"dispatch": mode.removesuffix("-nohold")}
        if mode.endswith("-nohold"):
            execution["locality_wait_for_holder"] = False
        if backlog:
            execution["locality_holder_backlog"] = int(backlog)
        if wait:
            execution["locality_wait"] = float(wait)
        if redis is not None:
            redis.start()
            execution.update(state="redis", redis_url=redis.url)
        listen: dict[str, object] = {"listen": f"{link.host_address}:0", "allow_insecure": True} if link else {}
        if count:
            listen["http_listen"] = "127.0.0.1:0"
        config = server_config(workdir / "server", stores=stores(workdir / "server" / "data"), execution=execution,
                               server=listen)
        with reapi_server_process(workdir / "server", config, env=env) as server:
            for n in range(3):
                metrics = f"{link.worker_address if link else '127.0.0.1'}:0"
                workers.append(start_worker(workdir / f"w{n}", server.address, bot_id=f"w{n}", concurrency=1,
                                            extra_args=["--http-listen", metrics],
                                            prefix=link.command([]) if link else ()))
            if cold_bazel:
                ws.shutdown()
            ws.clean()
            flags = [*remote_execution_flags(server.url), f"--jobs={jobs}"]
            ws.build("//...", flags=[*flags, "--nobuild"])
            pids = [server.process.pid] + ([redis.pid] if redis is not None else [])
            counter = BuildCounter(server.console_url() + "/metrics", redis.url if redis else None,
                                   dict(zip(["reapi-server", "redis-server"], pids))) if count else None
            if counter is not None:
                counter.start()
            cpu_before = sum(map(cpu_seconds, pids))
            started = time.perf_counter()
            ws.build("//...", flags=flags)
            elapsed = time.perf_counter() - started
            control_cpu = sum(map(cpu_seconds, pids)) - cpu_before
            counts = counter.stop() if counter is not None else None
            fetched, actions = [], []
            for worker in workers:
                match = METRICS.search(worker.log_text())
                assert match, "the worker printed no metrics address"
                page = scrape(match.group(1))
                fetched.append(int(page.value("reapi_worker_input_bytes_fetched_total")))
                actions.append(int(page.total("reapi_worker_actions_total")))
            if trace:
                names = [f"w{n}" for n in range(3)]
                traced = trace_build(server.address, server.process.log_text())
                print(breakdown(traced, dict(zip(names, fetched))), flush=True)
            problems = server.problems() + [p for w in workers for p in w.problems()]
            if problems:
                print("problems logged:\n" + "\n".join(problems[:10]))
    finally:
        for worker in workers:
            stop_worker(worker)
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return Build(elapsed, fetched, actions, control_cpu, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="builds per dispatch, interleaved")
    parser.add_argument("--modes", default="locality,fifo",
                        help='dispatches to compare, e.g. "locality,fifo,locality+0.3,locality-nohold" '
                             '(+W: locality_wait W s; -nohold: locality_wait_for_holder = false; '
                             '-backlogN: locality_holder_backlog = N; ...-before: the server of --before)')
    parser.add_argument("--components", type=int, default=6)
    parser.add_argument("--libraries", type=int, default=120)
    parser.add_argument("--headers", type=int, default=12)
    parser.add_argument("--header-kib", type=int, default=16)
    parser.add_argument("--jobs", default="12", help="Bazel's --jobs; several, comma-separated, interleaved")
    parser.add_argument("--state", choices=["memory", "redis"], default="memory", help="the scheduler state")
    parser.add_argument("--cold-bazel", action="store_true",
                        help="shut Bazel's server down before each build (else it stays up, warm, between builds)")
    parser.add_argument("--trace", action="store_true",
                        help="per build, where the fetched bytes went: by action kind and worker, and the floor")
    parser.add_argument("--link-rate", metavar="RATE",
                        help="workers reach the server over a link limited to RATE each way (tc syntax, e.g. "
                             "100mbit; needs root): what the bytes saved are worth across a network")
    parser.add_argument("--before", default="", help='source tree the "-before" modes\' server runs from '
                        '(e.g. git archive COMMIT cas server worker remote_apis_protos | tar -x -C DIR)')
    parser.add_argument("--counts", action="store_true",
                        help="count each timed build's gRPC calls per method and, with --state redis, its Redis "
                             "commands and scripts (a SLOWLOG of every command: costs redis-server some CPU)")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-locality-", dir=args.dir))
    os.chmod(base, 0o711)
    try:
        installation = BazelInstallation.find(base / "bazel")
    except BazelUnavailable as exc:
        print(f"skipped: {exc}")
        return
    jobs_values = [int(j) for j in args.jobs.split(",")]
    modes = [m if len(jobs_values) == 1 else f"{m}@{j}" for j in jobs_values for m in args.modes.split(",")]
    results: dict[str, list[Build]] = {mode: [] for mode in modes}
    network = ExitStack()
    try:
        link = network.enter_context(shaped_link(args.link_rate)) if args.link_rate else None
        source = base / "source"
        generate_workspace(source, args.components, args.libraries, args.headers, args.header_kib)
        ws = installation.workspace(source, base / "ws")
        order = []
        for round_number in range(args.rounds):
            order += modes if round_number % 2 == 0 else modes[::-1]
        print(f"{args.libraries} libraries over {args.components} components of {args.headers} x {args.header_kib} KiB "
              f"headers; 3 workers x 1 slot; --jobs={args.jobs}; {args.state} state; "
              f"Bazel server {'cold (restarted per build)' if args.cold_bazel else 'kept warm'}; "
              f"workers' link {link.rate + ' each way' if link else 'loopback'}\n")
        print(f"{'dispatch':<14} {'wall s':>7} {'fetched MiB':>12}  {'per worker MiB':<22} {'actions per worker':<19} "
              "server CPU s")
        # A sitting's first builds run slow whatever their dispatch (9.6-12 s builds took 23 s
        # first, and after one warm-up build the next two still took 13-16 s, 2026-12-07):
        # every mode runs once, untimed, so that the first mode in the order does not pay it.
        for warm_up in modes:
            warm_mode, _, warm_jobs = warm_up.partition("@")
            one_build(ws, base, warm_mode, int(warm_jobs or jobs_values[0]), args.state, args.cold_bazel, False, link,
                      args.before)
        for dispatch in order:
            mode, _, jobs = dispatch.partition("@")
            build = one_build(ws, base, mode, int(jobs or jobs_values[0]), args.state, args.cold_bazel, args.trace,
                              link, args.before, args.counts)
            results[dispatch].append(build)
            print(f"{dispatch:<14} {build.wall:7.1f} {sum(build.fetched) / 2**20:12.2f}  "
                  f"{' '.join(f'{f / 2**20:.2f}' for f in build.fetched):<22} "
                  f"{' '.join(map(str, build.actions)):<19} {build.control_cpu:.1f}", flush=True)
    finally:
        installation.shutdown_all()
        network.close()
        shutil.rmtree(base, ignore_errors=True)
    print()
    if args.counts:
        for dispatch, builds in results.items():
            print(report(dispatch, [b.counts for b in builds if b.counts is not None]))
            actions = sum(sum(b.actions) for b in builds) / len(builds)
            print(f"  actions run per build {actions:.1f}\n")
    print_medians(results, "median")
    # The first timed build ran slowest whatever its dispatch, warm-up builds notwithstanding
    # (2026-12-07: locality first, 12.3 and 13.0 s against ~11; fifo first, 11.9 against
    # 10.2-11.1), so the medians are given again without it.
    first = order[0]
    if len(results[first]) > 1:
        print_medians({**results, first: results[first][1:]}, "without the first timed build: median")


def print_medians(results: dict[str, list[Build]], label: str) -> None:
    """Each dispatch's median wall time and bytes, and its ratios to fifo at the same ``--jobs``."""
    medians = {d: (statistics.median(b.wall for b in bs), statistics.median(sum(b.fetched) for b in bs))
               for d, bs in results.items() if bs}
    for mode, (wall, total) in medians.items():
        line = f"{label} {mode:<14} {wall:6.1f} s {total / 2**20:8.2f} MiB"
        _, at, jobs = mode.partition("@")
        fifo = f"fifo{at}{jobs}"  # fifo at the same --jobs
        if fifo in medians and mode != fifo:
            fifo_wall, fifo_bytes = medians[fifo]
            line += (f"   vs fifo: wall time {wall / fifo_wall:.2f}x, bytes fetched {total / fifo_bytes:.2f}x "
                     f"({(1 - total / fifo_bytes) * 100:.0f}% fewer)")
        print(line)


if __name__ == "__main__":
    main()
