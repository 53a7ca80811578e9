"""Replicated frontends (Redis state) against one frontend with the in-memory state.

    .venv/bin/python -m tests.benchmarks.bench_replicas [--rounds 3] [--sequential 300]
        [--concurrent 2000] [--cas-rounds 200] [--bots 1000] [--queued 10000,30000,100000]
        [--drain-setups memory:1,redis:3] [--skip-latency] [--skip-cas] [--skip-drain]

The topology is deploy/replicated's, from its own config files: a redis-server (AOF
everysec), two storage nodes (storage.toml), frontends (frontend.toml: CAS mirrored
over the nodes, action cache and scheduler state in Redis); the memory baseline is
the same file with ``state = "memory"`` and one frontend (its action cache is still
the Redis one, so only the scheduler state differs). Clients and test bots
(tests/support/test_bot.py, finishing every action at once, so the numbers are the
control plane's own cost) run in this one process on one asyncio loop, spread round
robin over the frontends: each bot is one session holding its own long-poll
UpdateBotSession call, as a worker process would.

Part 1 (issue 11, acceptance 6), ``--rounds`` rounds; each round starts every setup
afresh (1 frontend memory state, 1 and 2 frontends Redis state; the order rotates
from round to round) and measures in it:

- Execute-to-COMPLETED, sequential, one bot (median, p99 ms);
- 50 concurrent Execute streams, 8 bots: actions/s;
- CPU ms per action of the frontends, storage nodes and redis-server (from
  /proc/PID/stat; summed over the processes of a kind and also per frontend);
Reported: the median of the rounds (range in brackets) and the ratio to the memory
state's median. Then, ``--rounds`` times with one frontend (the CAS path is the same
with either state), CPU per CAS call of the frontend and of the storage nodes:
BatchUpdateBlobs of 100 x 1 KiB new blobs, FindMissingBlobs of 1,000,
BatchReadBlobs of 100 x 1 KiB and a 1 MiB ByteStream write and read; reads cold (each
blob read once: a storage node serves it and the frontend's memory cache keeps it)
and hot (the same blob again: served by the frontend's cache).

Part 2 (acceptance 5), for each size in ``--queued``, memory state then Redis state
(one frontend against three): the actions are queued through every frontend (128
clients, Execute until QUEUED), then ``--bots`` bots spread over the frontends take
everything while a probe process sends 200 priority -1000 actions one by one
(Execute-to-EXECUTING: p50, p99). Every action must reach exactly one bot once:
lost and run-twice are counted, not assumed. Reported: submit rate, drain rate,
CPU per dispatch by process kind.

The machine may be shared and has few cores: every process here competes for
them. Read ratios within one run, and the CPU columns, rather than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from tests.benchmarks.bench_execution import Actions, cpu_seconds, execute, ms, own_cpu_seconds, stop, until_stage
from tests.conftest import REPO_ROOT
from tests.support.redis_process import RedisProcess
from tests.support.server_process import reapi_server_process
from tests.support.test_bot import TestBot

DEPLOY = REPO_ROOT / "deploy" / "replicated"
EXECUTION = {"worker_grace": 3600, "bot_session_timeout": 600}
QUEUED = re_pb2.ExecutionStage.QUEUED
SETUPS = (("memory", 1), ("redis", 1), ("redis", 2))
Metrics = dict[str, float]


class Topology:
    """redis-server, two storage nodes and ``frontends`` frontends; ``pids`` by name."""

    def __init__(self, root: Path, state: str, frontends: int) -> None:
        self.root = root
        self.state = state
        self.count = frontends
        self.stack = ExitStack()
        self.pids: dict[str, int] = {}
        self.addresses: list[str] = []

    def __enter__(self) -> Topology:
        redis = RedisProcess(self.root / "redis", appendonly=True, appendfsync="everysec")
        redis.start()
        self.stack.callback(redis.stop)
        self.pids["redis"] = redis.pid
        env: dict[str, str] = {"REDIS_URL": redis.url}
        for n in (1, 2):
            config = tomllib.loads((DEPLOY / "storage.toml").read_text())
            config["server"]["listen"] = "127.0.0.1:0"
            node = self.stack.enter_context(reapi_server_process(
                self.root / f"storage-{n}", config, log_level="WARNING",
                env={"STORAGE_DATA": str(self.root / f"storage-{n}" / "data")},
            ))
            self.pids[f"storage-{n}"] = node.process.pid
            env[f"STORAGE_{n}"] = node.address
        for n in range(1, self.count + 1):
            config = tomllib.loads((DEPLOY / "frontend.toml").read_text())
            config["server"]["listen"] = "127.0.0.1:0"
            config["execution"] = {**config["execution"], **EXECUTION, "state": self.state}
            if self.state == "memory":
                config["execution"] = {k: v for k, v in config["execution"].items() if not k.startswith("redis_")}
            frontend = self.stack.enter_context(reapi_server_process(
                self.root / f"frontend-{n}", config, log_level="WARNING", env=env,
            ))
            self.pids[f"frontend-{n}"] = frontend.process.pid
            self.addresses.append(frontend.address)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}


def cpu_by_kind(before: dict[str, float], after: dict[str, float], per: int, prefix: str) -> Metrics:
    """CPU ms per unit of work of each process kind (summed over its processes), and per frontend."""
    kinds: Metrics = {}
    frontends = 0
    for name in before:
        kind = name.split("-")[0]
        frontends += kind == "frontend"
        kinds[kind] = kinds.get(kind, 0.0) + (after[name] - before[name]) / per * 1000
    kinds["one frontend"] = kinds["frontend"] / frontends
    return {f"{prefix} CPU ms, {kind}": value for kind, value in kinds.items()}


async def channels(topology: Topology) -> list[grpc.aio.Channel]:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    return [grpc.aio.insecure_channel(address, options=options) for address in topology.addresses]


async def start_bots(chans: list[grpc.aio.Channel], count: int, prefix: str,
                     ran: Counter[str] | None = None) -> list[asyncio.Task[None]]:
    bots = [TestBot(chans[i % len(chans)], bot_id=f"{prefix}-{i}") for i in range(count)]
    for start in range(0, count, 100):
        await asyncio.gather(*(bot.create() for bot in bots[start : start + 100]))
    return [asyncio.create_task(run_bot(bot, ran)) for bot in bots]


async def run_bot(bot: TestBot, ran: Counter[str] | None) -> None:
    while True:
        for lease in [le for le in bot.leases.values() if le.completed is None]:
            if ran is not None:
                ran[lease.action_digest.hash] += 1
            bot.complete(lease.id)
        await bot.poll(timeout=60)


async def latency_round(topology: Topology, sequential: int, concurrent: int, tag: str) -> Metrics:
    chans = await channels(topology)
    stubs = [re_grpc.ExecutionStub(c) for c in chans]
    digests = await Actions(chans[0], prefix=f"lat-{tag}").make(sequential + concurrent + 50)
    tasks = await start_bots(chans, 1, "seq")
    for i, digest in enumerate(digests[:50]):  # warm-up
        await execute(stubs[i % len(stubs)], digest)
    before = topology.cpu()
    times = []
    for i, digest in enumerate(digests[50 : 50 + sequential]):
        start = time.perf_counter()
        await execute(stubs[i % len(stubs)], digest)
        times.append(time.perf_counter() - start)
    metrics = {"sequential: median ms": ms(times, 0.5), "sequential: p99 ms": ms(times, 0.99),
               **cpu_by_kind(before, topology.cpu(), sequential, "sequential:")}
    # The first bot keeps serving: one stopped mid-call would leave a session that may
    # still be handed a lease until it expires (as a vanished worker's would).
    tasks += await start_bots(chans, 7, "tput")
    pending = iter(enumerate(digests[50 + sequential :]))

    async def client() -> None:
        for i, digest in pending:
            await execute(stubs[i % len(stubs)], digest)

    before = topology.cpu()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(50)))
    metrics["50 concurrent: actions/s"] = concurrent / (time.perf_counter() - start)
    metrics.update(cpu_by_kind(before, topology.cpu(), concurrent, "50 concurrent:"))
    await stop(tasks)
    for channel in chans:
        await channel.close()
    return metrics


async def cas_round(topology: Topology, rounds: int) -> Metrics:
    [channel] = (await channels(topology))[:1]
    cas = re_grpc.ContentAddressableStorageStub(channel)
    bytestream = bs_grpc.ByteStreamStub(channel)
    counter = itertools.count()
    salt = time.time_ns()

    def blobs(count: int, size: int) -> dict[Digest, bytes]:
        datas = [f"{salt}:{next(counter)}:".encode().ljust(size, b"x") for _ in range(count)]
        return {Digest.of(d): d for d in datas}

    async def update(values: dict[Digest, bytes]) -> None:
        await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=d.to_proto(), data=v) for d, v in values.items()]))

    ids: list[Digest] = []
    for _ in range(max(10, rounds // 10)):  # 100 distinct blobs for each cold BatchReadBlobs
        batch = blobs(1000, 1024)
        await update(batch)
        ids += batch
    metrics: Metrics = {}
    step = itertools.count()

    async def measure(label: str, call: Callable[[], Awaitable[object]]) -> None:
        before = topology.cpu()
        for _ in range(rounds):
            await call()
        after = topology.cpu()
        metrics[f"{label}: CPU ms, frontend"] = (after["frontend-1"] - before["frontend-1"]) / rounds * 1000
        metrics[f"{label}: CPU ms, storage nodes"] = sum(
            after[f"storage-{n}"] - before[f"storage-{n}"] for n in (1, 2)) / rounds * 1000

    def batch_read(digests: list[Digest]) -> Awaitable[object]:
        return cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in digests]))

    await measure("BatchUpdateBlobs 100 x 1 KiB new", lambda: update(blobs(100, 1024)))
    await measure("FindMissingBlobs 1,000 present", lambda: cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[d.to_proto() for d in ids[:1000]])))
    await measure("BatchReadBlobs 100 x 1 KiB, cold (from a node; fills the frontend's cache)",
                  lambda: batch_read(ids[(i := next(step) % (len(ids) // 100)) * 100 : i * 100 + 100]))
    await measure("BatchReadBlobs 100 x 1 KiB, hot (the frontend's cache)", lambda: batch_read(ids[:100]))
    written: list[Digest] = []

    async def write_one() -> None:
        [(digest, data)] = blobs(1, 1 << 20).items()
        name = f"uploads/{next(counter)}/blobs/{digest.hash}/{digest.size_bytes}"
        await bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=name, data=data, finish_write=True)]))
        written.append(digest)

    async def read(digest: Digest) -> None:
        async for _ in bytestream.Read(bs_pb2.ReadRequest(resource_name=f"blobs/{digest.hash}/{digest.size_bytes}")):
            pass

    await measure("ByteStream Write 1 MiB new (to both nodes)", write_one)
    unread = iter(written)
    await measure("ByteStream Read 1 MiB, cold (from a node; fills the frontend's cache)", lambda: read(next(unread)))
    await measure("ByteStream Read 1 MiB, hot (the frontend's cache)", lambda: read(written[0]))
    await channel.close()
    return metrics


async def drain(topology: Topology, queued: int, bots: int) -> Metrics:
    chans = await channels(topology)
    stubs = [re_grpc.ExecutionStub(c) for c in chans]
    digests = await Actions(chans[0], prefix=f"drain-{topology.count}-{queued}").make(queued)
    pending = iter(enumerate(digests))

    async def submitter() -> None:
        for i, digest in pending:
            await until_stage(stubs[i % len(stubs)], digest, QUEUED)

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(128)))
    submit_seconds = time.perf_counter() - start
    ran: Counter[str] = Counter()
    connect = time.perf_counter()
    tasks = await start_bots(chans, bots, f"drainer-{topology.count}-{queued}", ran)
    connect_seconds = time.perf_counter() - connect
    before, own = topology.cpu(), own_cpu_seconds()
    started = time.perf_counter()
    prober = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.benchmarks.bench_execution", "--probe", topology.addresses[0],
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await prober.communicate()
    urgent = [float(line) for line in output.decode().split()]
    while sum(ran.values()) < queued + len(urgent):
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    after, own = topology.cpu(), own_cpu_seconds() - own
    await asyncio.sleep(2.0)  # anything run twice would show up now
    await stop(tasks)
    wanted = {d.hash for d in digests}
    dispatches = sum(ran.values())
    for channel in chans:
        await channel.close()
    return {
        "submit s": submit_seconds, "submit actions/s": queued / submit_seconds,
        "connect bots s": connect_seconds, "drain s": elapsed, "dispatches/s": dispatches / elapsed,
        "actions lost": len(wanted - set(ran)), "actions run twice": sum(1 for n in ran.values() if n > 1),
        "urgent p50 ms": ms(urgent, 0.5), "urgent p99 ms": ms(urgent, 0.99),
        **cpu_by_kind(before, after, dispatches, "per dispatch:"),
        "per dispatch: CPU ms, clients + bots": own / dispatches * 1000,
    }


def label(state: str, count: int) -> str:
    return f"{count} frontend{'s' if count > 1 else ''}, {state}"


def fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 100:
        return f"{value:.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def rounds_table(results: dict[str, list[Metrics]]) -> str:
    """Median (range) of every metric per setup, and the ratio of medians to the first setup."""
    names = list(results)
    keys = list(dict.fromkeys(key for rounds in results.values() for metrics in rounds for key in metrics))
    header = ["measurement", *names, *(f"{n} / {names[0]}" for n in names[1:])]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for key in keys:
        cells, medians = [], []
        for name in names:
            values = [m[key] for m in results[name] if key in m]
            if not values:
                cells.append("")
                medians.append(float("nan"))
                continue
            medians.append(statistics.median(values))
            spread = f" ({fmt(min(values))}-{fmt(max(values))})" if len(values) > 1 else ""
            cells.append(fmt(medians[-1]) + spread)
        ratios = [f"{m / medians[0]:.2f}x" if medians[0] and medians[0] == medians[0] and m == m else ""
                  for m in medians[1:]]
        lines.append("| " + " | ".join([key, *cells, *ratios]) + " |")
    return "\n".join(lines)


def drain_table(results: dict[str, Metrics]) -> str:
    names = list(results)
    keys = list(next(iter(results.values())))
    lines = ["| measurement | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {key} | " + " | ".join(fmt(results[n][key]) for n in names) + " |" for key in keys]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--cas-rounds", type=int, default=200)
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--queued", default="100000", help="comma-separated queue depths, run in order")
    parser.add_argument("--drain-setups", default="memory:1,redis:3", help="STATE:FRONTENDS,... for the drain, in order")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-cas", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args()
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        if not args.skip_latency:
            results: dict[str, list[Metrics]] = {label(*setup): [] for setup in SETUPS}
            for r in range(args.rounds):
                for state, count in SETUPS[r % 3 :] + SETUPS[: r % 3]:
                    print(f"# {time.strftime('%H:%M:%S')} round {r + 1}: {label(state, count)}; "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                    with Topology(Path(tmp) / f"lat-{r}-{state}-{count}", state, count) as topology:
                        metrics = asyncio.run(latency_round(topology, args.sequential, args.concurrent, f"{r}"))
                    results[label(state, count)].append(metrics)
            print(rounds_table(results), flush=True)
        if not args.skip_cas:
            cas: dict[str, list[Metrics]] = {"1 frontend (CAS mirrored over 2 storage nodes)": []}
            for r in range(args.rounds):
                print(f"# {time.strftime('%H:%M:%S')} round {r + 1}: CAS calls; load {os.getloadavg()[0]:.1f}", flush=True)
                with Topology(Path(tmp) / f"cas-{r}", "redis", 1) as topology:
                    cas["1 frontend (CAS mirrored over 2 storage nodes)"].append(
                        asyncio.run(cas_round(topology, args.cas_rounds)))
            print(rounds_table(cas), flush=True)
        if not args.skip_drain:
            for queued in (int(q) for q in args.queued.split(",")):
                drains: dict[str, Metrics] = {}
                for state, count in ((state, int(n)) for state, n in (s.split(":") for s in args.drain_setups.split(","))):
                    print(f"# {time.strftime('%H:%M:%S')} drain {queued:,}: {label(state, count)}; "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                    with Topology(Path(tmp) / f"drain-{queued}-{state}-{count}", state, count) as topology:
                        drains[label(state, count)] = asyncio.run(drain(topology, queued, args.bots))
                    print(drain_table({label(state, count): drains[label(state, count)]}), flush=True)
                print(f"\n{args.bots} bots, {queued:,} queued + 200 urgent\n" + drain_table(drains), flush=True)
    print(f"# {time.strftime('%H:%M:%S')} done; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
