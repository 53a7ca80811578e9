"""Remote execution: a real reapi-server process, clients and test bots in this process.

    .venv/bin/python -m tests.benchmarks.bench_execution [--sequential 500] [--throughput 3000]
        [--bots 1000] [--queued 100000] [--disk]

Bots are tests/support/test_bot.py, finishing every action at once, so the numbers
are the control plane's own cost (issue 3, acceptance 2). Stores are in memory
(``--disk`` for the zero-config disk stores). Rows:

- Execute-to-COMPLETED, sequential, one bot: from sending Execute to reading the
  COMPLETED Operation (median, p90, p99 ms);
- throughput with 8 bots and 64 concurrent Execute streams (actions/s);
- the scheduler core alone (no gRPC): submit and dispatch cost with ``--queued``
  actions queued and ``--bots`` sessions (us per call);
- ``--bots`` connected bots and ``--queued`` queued actions: submission rate and
  the server's RSS (bytes per queued action); then the bots drain the queue while
  urgent (priority -1000) actions are submitted one by one: their
  Execute-to-EXECUTING time is the dispatch latency a client sees with a deep queue
  and a busy fleet; the drain rate and server CPU per dispatch go with it. (All
  bots share this one client process, so their own round trips measure this
  process's queueing, not the server: they are not reported.)

The machine may be shared: read ratios, not absolutes, unless it is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.scheduler.operation import PreparedAction
from server.scheduler.platform import PlatformMatcher
from server.scheduler.policy.scheduler import SchedulingPolicy
from server.scheduler.sessions import BotRegistration, LeaseReport
from server.scheduler.state.memory.state import MemoryState
from tests.support.server_process import reapi_server_process, server_config
from tests.support.test_bot import TestBot

MEMORY_STORES = {
    "cas-memory": {"type": "memory", "max_size": "4GiB"},
    "cas": {"type": "verify", "inner": "cas-memory"},
    "ac": {"type": "memory", "max_size": "1GiB"},
}
EXECUTION = {"worker_grace": 3600, "bot_session_timeout": 600}
COMPLETED = re_pb2.ExecutionStage.COMPLETED
QUEUED = re_pb2.ExecutionStage.QUEUED


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (a shared machine's load does not inflate it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


class Actions:
    """Unique actions sharing one Command and the empty input root, uploaded in batches."""

    def __init__(self, channel: grpc.aio.Channel, prefix: str = "bench") -> None:
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.prefix = prefix
        self.serial = 0

    async def upload(self, blobs: list[bytes]) -> list[Digest]:
        digests = [Digest.of(b) for b in blobs]
        request = re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=d.to_proto(), data=b) for d, b in zip(digests, blobs)
        ])
        response = await self.cas.BatchUpdateBlobs(request)
        assert all(r.status.code == 0 for r in response.responses)
        return digests

    async def make(self, count: int, batch: int = 2000) -> list[Digest]:
        [command] = await self.upload([re_pb2.Command(arguments=["true"]).SerializeToString()])
        root = Digest.of(b"")
        out: list[Digest] = []
        while len(out) < count:
            blobs = []
            for _ in range(min(batch, count - len(out))):
                self.serial += 1
                action = re_pb2.Action(command_digest=command.to_proto(), input_root_digest=root.to_proto(),
                                       salt=f"{self.prefix}-{self.serial}".encode())
                blobs.append(action.SerializeToString())
            out += await self.upload(blobs)
        return out


async def execute(stub: re_grpc.ExecutionStub, digest: Digest) -> None:
    last = None
    async for operation in stub.Execute(re_pb2.ExecuteRequest(action_digest=digest.to_proto())):
        last = operation
    assert last is not None and last.done


async def run_bot(bot: TestBot, round_trips: list[float] | None = None) -> None:
    """Finish each lease at once; report it in the call that asks for the next."""
    while True:
        for lease in [le for le in bot.leases.values() if le.completed is None]:
            bot.complete(lease.id)
        start = time.perf_counter()
        reporting = any(le.completed is not None for le in bot.leases.values())
        new = await bot.poll()
        if round_trips is not None and reporting and new:
            round_trips.append(time.perf_counter() - start)


async def start_bots(channel: grpc.aio.Channel, count: int, round_trips: list[float] | None = None,
                     prefix: str = "bench") -> tuple[list[TestBot], list[asyncio.Task[None]]]:
    bots = [TestBot(channel, bot_id=f"{prefix}-{i}") for i in range(count)]
    for start in range(0, count, 100):
        await asyncio.gather(*(bot.create() for bot in bots[start : start + 100]))
    tasks = [asyncio.create_task(run_bot(bot, round_trips)) for bot in bots]
    return bots, tasks


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def sequential_latency(address: str, pid: int, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        digests = await Actions(channel).make(count + 50)
        _, tasks = await start_bots(channel, 1, prefix="seq")
        stub = re_grpc.ExecutionStub(channel)
        for digest in digests[:50]:  # warm-up
            await execute(stub, digest)
        times = []
        server_cpu, driver_cpu = cpu_seconds(pid), own_cpu_seconds()
        for digest in digests[50:]:
            start = time.perf_counter()
            await execute(stub, digest)
            times.append(time.perf_counter() - start)
        server_cpu, driver_cpu = cpu_seconds(pid) - server_cpu, own_cpu_seconds() - driver_cpu
        await stop(tasks)
    return [f"| Execute-to-COMPLETED, sequential, 1 bot ({count} actions) | median {ms(times, 0.5):.2f} ms, "
            f"p90 {ms(times, 0.9):.2f} ms, p99 {ms(times, 0.99):.2f} ms; CPU per action: server "
            f"{server_cpu / count * 1000:.2f} ms, client + bot {driver_cpu / count * 1000:.2f} ms |"]


async def throughput(address: str, pid: int, count: int, bots: int = 8, concurrency: int = 64) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        digests = await Actions(channel).make(count)
        _, tasks = await start_bots(channel, bots, prefix="tput")
        stub = re_grpc.ExecutionStub(channel)
        pending = iter(digests)

        async def client() -> None:
            for digest in pending:
                await execute(stub, digest)

        start = time.perf_counter()
        server_cpu, driver_cpu = cpu_seconds(pid), own_cpu_seconds()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        server_cpu, driver_cpu = cpu_seconds(pid) - server_cpu, own_cpu_seconds() - driver_cpu
        await stop(tasks)
    return [f"| throughput, {bots} bots, {concurrency} concurrent Executes ({count} actions) | "
            f"{count / elapsed:.0f} actions/s; server CPU {server_cpu / elapsed * 100:.0f}% of a core "
            f"({count / server_cpu:.0f} actions per server CPU-second), clients + bots {driver_cpu / elapsed * 100:.0f}% |"]


async def scheduler_core(queued: int, sessions: int) -> list[str]:
    """The scheduler over its in-memory state, without gRPC: what one submit and one dispatch cost."""
    matcher = PlatformMatcher()
    scheduler = SchedulingPolicy(MemoryState(PlatformMatcher(), time.time()), PlatformMatcher())
    requirements = matcher.requirements([("OSFamily", "linux")])
    offer = matcher.offer([("OSFamily", "linux"), ("ISA", "x86-64")])
    actions = [PreparedAction("", Digest.of(f"a{i}".encode()), b"x" * 120, requirements) for i in range(queued)]
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for i, action in enumerate(actions):
        await scheduler.submit(f"operations/{i}", action, 0)
    submit_us = (time.perf_counter() - start) / queued * 1e6
    names = []
    for i in range(sessions):
        answer = await scheduler.create_session(BotRegistration(f"core-{i}", "", offer))
        names.append((answer.name, f"core-{i}", answer.leases[0].lease_id))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    rounds = min(queued - sessions, 50 * sessions)
    start = time.perf_counter()
    done = 0
    while done < rounds:
        for index, (name, bot_id, lease_id) in enumerate(names):
            if done >= rounds:
                break
            answer = await scheduler.update_session(name, bot_id, True, [LeaseReport(lease_id, True)], {}, 0.5)
            names[index] = (name, bot_id, answer.leases[0].lease_id)
            done += 1
    dispatch_us = (time.perf_counter() - start) / done * 1e6
    return [
        f"| scheduler core: submit with up to {queued:,} queued | {submit_us:.1f} us per action |",
        f"| scheduler core: report + next lease, {sessions} sessions, {queued:,} queued | "
        f"{dispatch_us:.1f} us per dispatch |",
        f"| scheduler core: memory for {queued:,} queued operations | ~{grown:.0f} MiB peak growth "
        f"(~{grown * 1024 * 1024 / queued:.0f} B per action, action blobs included) |",
    ]


async def until_stage(stub: re_grpc.ExecutionStub, digest: Digest, stage: int, priority: int = 0) -> None:
    """Execute until the operation reaches ``stage``, then hang up (which cancels nothing)."""
    call = stub.Execute(re_pb2.ExecuteRequest(
        action_digest=digest.to_proto(), execution_policy=re_pb2.ExecutionPolicy(priority=priority)
    ))
    async for operation in call:
        metadata = re_pb2.ExecuteOperationMetadata()
        operation.metadata.Unpack(metadata)
        if metadata.stage == stage:
            break
    call.cancel()


async def many_bots(address: str, pid: int, queued: int, bots: int, drain_seconds: float) -> list[str]:
    rows = []
    async with grpc.aio.insecure_channel(address) as channel:
        rss_start = rss_mib(pid)
        actions = Actions(channel)
        digests = await actions.make(queued)
        rss_uploaded = rss_mib(pid)
        stub = re_grpc.ExecutionStub(channel)
        pending = iter(digests)

        async def submitter() -> None:
            for digest in pending:
                await until_stage(stub, digest, QUEUED)

        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(128)))
        submit_rate = queued / (time.perf_counter() - start)
        await asyncio.sleep(1)
        rss_queued = rss_mib(pid)
        per_action = (rss_queued - rss_uploaded) * 1024 * 1024 / queued
        rows.append(f"| submit {queued:,} actions (Execute until QUEUED, then hang up; 128 clients) | "
                    f"{submit_rate:.0f} actions/s |")
        rows.append(f"| server RSS: start / {queued:,} action blobs in the CAS / {queued:,} queued | "
                    f"{rss_start:.0f} / {rss_uploaded:.0f} / {rss_queued:.0f} MiB "
                    f"(~{per_action:.0f} B per queued action) |")
        round_trips: list[float] = []
        start = time.perf_counter()
        _, tasks = await start_bots(channel, bots, round_trips, prefix="many")
        rows.append(f"| connect {bots} bots (each gets a lease at once) | {time.perf_counter() - start:.1f} s |")
        # While the bots drain the queue, urgent actions jump it: Execute-to-EXECUTING
        # is the dispatch latency a client sees with a deep queue and a busy fleet. The
        # prober is its own process, so the bots' load here does not delay its reads.
        round_trips.clear()
        server_cpu = cpu_seconds(pid)
        started = time.perf_counter()
        prober = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.benchmarks.bench_execution", "--probe", address,
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await prober.communicate()
        dispatch = [float(line) for line in output.decode().split()]
        await asyncio.sleep(max(0.0, drain_seconds - (time.perf_counter() - started)))
        elapsed = time.perf_counter() - started
        dispatches = len(round_trips)
        server_cpu = cpu_seconds(pid) - server_cpu
        await stop(tasks)
        rows.append(
            f"| {bots} bots draining a {queued:,}-deep queue for {elapsed:.0f} s | {dispatches / elapsed:.0f} "
            f"dispatches/s, {server_cpu / max(1, dispatches) * 1000:.2f} ms server CPU per dispatch "
            f"(report + next lease, one UpdateBotSession) |"
        )
        rows.append(f"| meanwhile, a priority -1000 action: Execute-to-EXECUTING (200 sequential) | "
                    f"p50 {ms(dispatch, 0.5):.1f} ms, p99 {ms(dispatch, 0.99):.1f} ms |")
        rows.append(f"| server RSS with {bots} bots connected / peak | {rss_mib(pid):.0f} / "
                    f"{rss_mib(pid, 'VmHWM'):.0f} MiB |")
    return rows


async def probe(address: str, count: int = 200) -> None:
    """Print the Execute-to-EXECUTING time of ``count`` sequential urgent actions."""
    async with grpc.aio.insecure_channel(address) as channel:
        digests = await Actions(channel, prefix="probe").make(count)
        stub = re_grpc.ExecutionStub(channel)
        for digest in digests:
            begin = time.perf_counter()
            await until_stage(stub, digest, re_pb2.ExecutionStage.EXECUTING, priority=-1000)
            print(time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--throughput", type=int, default=3000)
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--drain-seconds", type=float, default=15.0)
    parser.add_argument("--disk", action="store_true", help="zero-config disk stores instead of memory")
    args = parser.parse_args()
    if args.probe:
        asyncio.run(probe(args.probe))
        return
    print("| measurement | result |\n|---|---|")
    print(*asyncio.run(scheduler_core(args.queued, args.bots)), sep="\n", flush=True)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        config: dict[str, Any] = server_config(Path(tmp), execution=EXECUTION)
        if not args.disk:
            config["stores"] = MEMORY_STORES
        with reapi_server_process(Path(tmp), config, log_level="WARNING") as server:
            pid = server.process.pid
            print(*asyncio.run(sequential_latency(server.address, pid, args.sequential)), sep="\n", flush=True)
            print(*asyncio.run(throughput(server.address, pid, args.throughput)), sep="\n", flush=True)
        with reapi_server_process(Path(tmp) / "many", config, log_level="WARNING") as server:
            rows = asyncio.run(many_bots(server.address, server.process.pid, args.queued, args.bots, args.drain_seconds))
            print(*rows, sep="\n", flush=True)
    print(f"\nstores: {'disk' if args.disk else 'memory'}; server and clients on one host; "
          f"median of {args.sequential} sequential actions after 50 warm-up ones")


if __name__ == "__main__":
    main()
