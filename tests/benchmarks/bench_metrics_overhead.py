"""What metrics cost (issue 12, acceptance 3): the same server and worker with metrics
on (``--http-listen``: the RPC-timing interceptor, counted CAS, execution metrics,
worker metrics) and off, measured in one sitting, interleaved round by round.

    .venv/bin/python -m tests.benchmarks.bench_metrics_overhead [--rounds 30] [--gets 400] [--executes 30]

Two reapi-server processes (zero-config stores, one with ``http_listen``) each with
its reapi-worker process (the one of the metrics server with ``--http-listen``).
Each round times, on both in alternating order, GetActionResult round trips of a
stored result and sequential ``/bin/true`` Executes (fresh actions, skip_cache_lookup),
and scrapes /metrics once, as Prometheus would. Reported: the median per side over
all rounds, the median over rounds of the on/off ratio (target <= 1.03) with the
middle half and the whole range of the per-round ratios, and CPU time per call from
/proc (less shaken by a busy machine than wall-clock latency): the server's per
GetActionResult and per Execute, the worker's per Execute. A CPU ratio is the sums'
(on / off over all rounds; one round's 10 ms clock ticks are too coarse for a ratio
of its own), with a 95% interval from resampling the rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.benchmarks.bench_worker import Client, stores
from tests.support.server_process import reapi_server_process, server_config
from tests.support.worker_process import reapi_worker_process


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Side:
    def __init__(self, name: str, address: str, http: str | None, pid: int, worker_pid: int) -> None:
        self.name = name
        self.pid = pid
        self.worker_pid = worker_pid
        # Per round: server CPU over the gets, server and worker CPU over the executes.
        self.get_cpu: list[float] = []
        self.execute_cpu: list[float] = []
        self.worker_cpu: list[float] = []
        self.client = Client(address)
        self.ac = re_grpc.ActionCacheStub(self.client.channel)
        self.http = http
        grpc.channel_ready_future(self.client.channel).result(timeout=30)
        self.command = self.client.command(["/bin/true"])
        empty = re_pb2.Directory().SerializeToString()
        self.root = Digest.of(empty)
        self.client.upload({self.root: empty})
        stdout = b"some output\n"
        action = Digest.of(b"bench_metrics_overhead: a cached action")
        self.client.upload({Digest.of(stdout): stdout})
        self.ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(
            action_digest=action.to_proto(),
            action_result=re_pb2.ActionResult(exit_code=0, stdout_digest=Digest.of(stdout).to_proto())))
        self.get = re_pb2.GetActionResultRequest(action_digest=action.to_proto())
        self.get_times: list[float] = []
        self.execute_times: list[float] = []

    def warm_up(self) -> None:
        for _ in range(200):
            self.ac.GetActionResult(self.get)
        for _ in range(20):
            self.client.execute(self.client.action(self.command, self.root))

    def round(self, gets: int, executes: int) -> tuple[float, float]:
        times = []
        cpu_before = cpu_seconds(self.pid)
        for _ in range(gets):
            start = time.perf_counter()
            self.ac.GetActionResult(self.get)
            times.append(time.perf_counter() - start)
        self.get_cpu.append(cpu_seconds(self.pid) - cpu_before)
        get_median = statistics.median(times)
        self.get_times += times
        times = []
        actions = [self.client.action(self.command, self.root) for _ in range(executes)]
        cpu_before, worker_before = cpu_seconds(self.pid), cpu_seconds(self.worker_pid)
        for action in actions:
            start = time.perf_counter()
            self.client.execute(action)
            times.append(time.perf_counter() - start)
        self.execute_cpu.append(cpu_seconds(self.pid) - cpu_before)
        self.worker_cpu.append(cpu_seconds(self.worker_pid) - worker_before)
        execute_median = statistics.median(times)
        self.execute_times += times
        if self.http:
            with urllib.request.urlopen(f"{self.http}/metrics", timeout=10) as response:
                response.read()
        return get_median, execute_median


def spread(ratios: list[float]) -> str:
    """Median of per-round ratios, their middle half and their whole range."""
    ordered = sorted(ratios)
    quartiles = statistics.quantiles(ordered, n=4)
    return (f"{statistics.median(ordered):.3f} (middle half {quartiles[0]:.3f}-{quartiles[2]:.3f}, "
            f"all {ordered[0]:.3f}-{ordered[-1]:.3f})")


def pooled(on: list[float], off: list[float], draws: int = 2000) -> str:
    """on/off of the CPU summed over all rounds, with a 95% interval from resampling rounds."""
    rounds = range(len(on))
    pick = random.Random(12)
    samples = []
    for _ in range(draws):
        chosen = [pick.choice(rounds) for _ in rounds]
        samples.append(sum(on[i] for i in chosen) / sum(off[i] for i in chosen))
    samples.sort()
    return f"{sum(on) / sum(off):.3f} (95%: {samples[int(0.025 * draws)]:.3f}-{samples[int(0.975 * draws)]:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--gets", type=int, default=400)
    parser.add_argument("--executes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reapi-bench-metrics-") as tmp:
        root = Path(tmp)
        on_config = server_config(root / "on", stores=stores(root / "on" / "data"),
                                  server={"http_listen": "127.0.0.1:0"})
        off_config = server_config(root / "off", stores=stores(root / "off" / "data"))
        with (reapi_server_process(root / "on", on_config) as on_server,
              reapi_server_process(root / "off", off_config) as off_server,
              reapi_worker_process(root / "on-worker", on_server.address, concurrency=2,
                                   extra_args=["--http-listen", "127.0.0.1:0"]) as on_worker,
              reapi_worker_process(root / "off-worker", off_server.address, concurrency=2) as off_worker):
            on = Side("on", on_server.address, on_server.console_url(), on_server.process.pid, on_worker.process.pid)
            off = Side("off", off_server.address, None, off_server.process.pid, off_worker.process.pid)
            for side in (on, off):
                side.warm_up()
            get_ratios, execute_ratios = [], []
            loads = [os.getloadavg()[0]]
            began = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            for number in range(args.rounds):
                order = (on, off) if number % 2 == 0 else (off, on)
                results = {side.name: side.round(args.gets, args.executes) for side in order}
                get_ratios.append(results["on"][0] / results["off"][0])
                execute_ratios.append(results["on"][1] / results["off"][1])
                print(f"round {number + 1}: GetActionResult on {results['on'][0] * 1e3:.3f} ms / off "
                      f"{results['off'][0] * 1e3:.3f} ms; /bin/true Execute on {results['on'][1] * 1e3:.2f} ms / "
                      f"off {results['off'][1] * 1e3:.2f} ms; load {os.getloadavg()[0]:.1f}", flush=True)
                loads.append(os.getloadavg()[0])
    gets, executes = args.rounds * args.gets, args.rounds * args.executes
    print(f"\n{args.rounds} rounds from {began} UTC; load average (1 min) {min(loads):.1f}-{max(loads):.1f}, "
          f"median {statistics.median(loads):.1f}; {os.cpu_count()} cores")
    print("| measurement | on | off | on/off |\n|---|---|---|---|")
    print(f"| GetActionResult round trip, median | {statistics.median(on.get_times) * 1e3:.3f} ms | "
          f"{statistics.median(off.get_times) * 1e3:.3f} ms | {spread(get_ratios)} |")
    print(f"| server CPU per GetActionResult | {sum(on.get_cpu) / gets * 1e3:.3f} ms | "
          f"{sum(off.get_cpu) / gets * 1e3:.3f} ms | {pooled(on.get_cpu, off.get_cpu)} |")
    print(f"| /bin/true Execute to result, median | {statistics.median(on.execute_times) * 1e3:.2f} ms | "
          f"{statistics.median(off.execute_times) * 1e3:.2f} ms | {spread(execute_ratios)} |")
    print(f"| server CPU per Execute | {sum(on.execute_cpu) / executes * 1e3:.3f} ms | "
          f"{sum(off.execute_cpu) / executes * 1e3:.3f} ms | {pooled(on.execute_cpu, off.execute_cpu)} |")
    print(f"| worker CPU per Execute | {sum(on.worker_cpu) / executes * 1e3:.3f} ms | "
          f"{sum(off.worker_cpu) / executes * 1e3:.3f} ms | {pooled(on.worker_cpu, off.worker_cpu)} |")


if __name__ == "__main__":
    main()
