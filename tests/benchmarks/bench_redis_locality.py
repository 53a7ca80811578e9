"""What locality dispatch costs in the Redis scheduler state: ``fifo`` against ``locality``.

    .venv/bin/python -m tests.benchmarks.bench_redis_locality [--rounds 3] [--sequential 300]
        [--concurrent 1500] [--bots 8] [--queued 3000] [--drain-bots 32] [--roots 16]

Per round and dispatch (interleaved: fifo, locality, then locality, fifo, ...): a new
redis-server and one reapi-server process (``state = "redis"``, memory stores), and
test bots in this process (tests/support/test_bot.py) that finish every action at
once, so the figures are the control plane's own cost. Each bot sends, when it
opens its session, an 8 KiB cache summary (a DigestFilter, as reapi-worker's) that
holds the input files of ``--roots`` input roots ``r`` with ``r mod bots`` its
index, and its load; it sends no summary again (reapi-worker sends one only when it
changed). Every action has one of the roots as input (4 files of 32 KiB), in turn.

Rows, median of the rounds (range) and the ratio locality / fifo:

- sequential Execute-to-COMPLETED with ``--bots`` bots waiting, so with locality
  every action is a choice among them (place_bots, then place): median and p99 ms,
  CPU ms per action of the server and of redis-server;
- 50 concurrent Executes over ``--bots`` bots: actions/s and CPU per action;
- drain: ``--queued`` actions queued, then ``--drain-bots`` bots take them (with
  locality, claim's window: claim_window, then claim_chosen): dispatches/s, CPU per
  dispatch; every action must run exactly once (lost and run twice are counted);
- for each part, the share of actions that ran on the bot holding their inputs
  (1 / bots by chance).

The machine may be shared and has few cores: read ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.benchmarks.bench_execution import Actions, cpu_seconds, execute, ms, stop, until_stage
from tests.benchmarks.bench_replicas import fmt, rounds_table
from tests.support.redis_process import RedisProcess
from tests.support.server_process import reapi_server_process, server_config
from tests.support.test_bot import TestBot

EXECUTION = {"worker_grace": 3600, "bot_session_timeout": 600}
QUEUED = re_pb2.ExecutionStage.QUEUED
Metrics = dict[str, float]


class Workload:
    """Input roots, actions over them in turn, and which root each action has."""

    def __init__(self, channel: grpc.aio.Channel, roots: int, tag: str) -> None:
        self.uploader = Actions(channel, prefix=tag)
        self.count = roots
        self.files: list[list[Digest]] = []
        self.roots: list[Digest] = []
        self.root_of: dict[str, int] = {}  # action hash -> root index

    async def upload_roots(self, tag: str) -> None:
        for r in range(self.count):
            blobs = [f"{tag}:{r}:{f}:".encode().ljust(32 << 10, b"h") for f in range(4)]
            files = await self.uploader.upload(blobs)
            directory = re_pb2.Directory(files=[re_pb2.FileNode(name=f"h{i}.h", digest=d.to_proto())
                                                for i, d in enumerate(files)])
            [root] = await self.uploader.upload([directory.SerializeToString()])
            self.files.append(files)
            self.roots.append(root)

    async def actions(self, count: int, tag: str) -> list[Digest]:
        [command] = await self.uploader.upload([re_pb2.Command(arguments=["true"]).SerializeToString()])
        out: list[Digest] = []
        for start in range(0, count, 1000):
            blobs, roots = [], []
            for i in range(start, min(count, start + 1000)):
                roots.append(i % self.count)
                blobs.append(re_pb2.Action(command_digest=command.to_proto(),
                                           input_root_digest=self.roots[roots[-1]].to_proto(),
                                           salt=f"{tag}-{i}".encode()).SerializeToString())
            digests = await self.uploader.upload(blobs)
            self.root_of.update((d.hash, r) for d, r in zip(digests, roots))
            out += digests
        return out

    def summary(self, index: int, bots: int) -> bytes:
        held = DigestFilter(8192, 5)
        held.add_all(d.hash for r in range(index, self.count, bots) for d in self.files[r])
        return held.to_bytes()


class Fleet:
    """Bots finishing every action at once; counts what each ran and whether it held it."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.ran: Counter[str] = Counter()
        self.on_holder = 0
        self.bots: list[TestBot] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, channel: grpc.aio.Channel, count: int, prefix: str) -> None:
        self.bots = [TestBot(channel, bot_id=f"{prefix}-{i}", summary_size=8192, load="cpu=0.10 memory=0.20",
                             cache=self.workload.summary(i, count)) for i in range(count)]
        await asyncio.gather(*(bot.create() for bot in self.bots))
        for bot in self.bots:
            bot.cache = None  # said once: the server keeps it (reapi-worker resends only a changed one)
        self.tasks = [asyncio.create_task(self._run(bot, i)) for i, bot in enumerate(self.bots)]

    def _finish(self, bot: TestBot, index: int) -> None:
        for lease in [le for le in bot.leases.values() if le.completed is None]:
            digest = lease.action_digest.hash
            self.ran[digest] += 1
            self.on_holder += self.workload.root_of.get(digest, -1) % len(self.bots) == index
            bot.complete(lease.id)

    async def _run(self, bot: TestBot, index: int) -> None:
        while True:
            self._finish(bot, index)
            await bot.poll(timeout=60)

    async def stop(self) -> None:
        """The bots finish what they hold and end their sessions (a bot that just called
        counts as on its way back: locality would still give it work)."""
        await stop(self.tasks)
        for index, bot in enumerate(self.bots):
            bot.status = bots_pb2.BotStatus.BOT_TERMINATING
            while bot.leases:
                self._finish(bot, index)
                await bot.poll(timeout=5)
            await bot.poll(timeout=5)

    def reset(self) -> None:
        self.ran.clear()
        self.on_holder = 0


async def one_round(root: Path, dispatch: str, args: argparse.Namespace, tag: str) -> Metrics:
    redis = RedisProcess(root / "redis")
    redis.start()
    try:
        mode, _, backlog = dispatch.partition("-backlog")
        execution = {**EXECUTION, "state": "redis", "redis_url": redis.url, "dispatch": mode.removesuffix("-nohold")}
        if backlog:
            execution["locality_holder_backlog"] = int(backlog)
        if dispatch.endswith("-nohold"):
            execution["locality_wait_for_holder"] = False
        stores = {"cas": {"type": "memory"}, "ac": {"type": "memory"}}
        config = server_config(root / "server", stores=stores, execution=execution)
        with reapi_server_process(root / "server", config, log_level="WARNING") as server:
            return await measure(server.address, {"server": server.process.pid, "redis": redis.pid}, args, tag)
    finally:
        redis.stop()


def cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_per(before: dict[str, float], after: dict[str, float], count: int, label: str) -> Metrics:
    return {f"{label}: CPU ms, {name}": (after[name] - before[name]) / count * 1000 for name in before}


async def measure(address: str, pids: dict[str, int], args: argparse.Namespace, tag: str) -> Metrics:
    metrics: Metrics = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = re_grpc.ExecutionStub(channel)
        workload = Workload(channel, args.roots, tag)
        await workload.upload_roots(tag)
        digests = await workload.actions(args.sequential + args.concurrent + 50, f"{tag}-run")
        fleet = Fleet(workload)
        await fleet.start(channel, args.bots, f"{tag}-bot")
        for digest in digests[:50]:  # warm-up
            await execute(stub, digest)
        fleet.reset()
        before, times = cpu(pids), []
        for digest in digests[50 : 50 + args.sequential]:
            start = time.perf_counter()
            await execute(stub, digest)
            times.append(time.perf_counter() - start)
        metrics["sequential: median ms"] = ms(times, 0.5)
        metrics["sequential: p99 ms"] = ms(times, 0.99)
        metrics.update(cpu_per(before, cpu(pids), args.sequential, "sequential"))
        metrics["sequential: share on the holder"] = fleet.on_holder / args.sequential
        fleet.reset()
        pending = iter(digests[50 + args.sequential :])

        async def client() -> None:
            for digest in pending:
                await execute(stub, digest)

        before, start = cpu(pids), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(50)))
        metrics["50 concurrent: actions/s"] = args.concurrent / (time.perf_counter() - start)
        metrics.update(cpu_per(before, cpu(pids), args.concurrent, "50 concurrent"))
        metrics["50 concurrent: share on the holder"] = fleet.on_holder / args.concurrent
        await fleet.stop()
        metrics.update(await drain(channel, stub, workload, pids, args, tag))
    return metrics


async def drain(channel: grpc.aio.Channel, stub: re_grpc.ExecutionStub, workload: Workload, pids: dict[str, int],
                args: argparse.Namespace, tag: str) -> Metrics:
    digests = await workload.actions(args.queued, f"{tag}-drain")
    pending = iter(digests)

    async def submitter() -> None:
        for digest in pending:
            await until_stage(stub, digest, QUEUED)

    await asyncio.gather(*(submitter() for _ in range(32)))
    fleet = Fleet(workload)
    before, start = cpu(pids), time.perf_counter()
    await fleet.start(channel, args.drain_bots, f"{tag}-drainer")
    while sum(fleet.ran.values()) < args.queued:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    after = cpu(pids)
    await asyncio.sleep(1.0)  # anything run twice would show up now
    await fleet.stop()
    return {
        "drain: dispatches/s": args.queued / elapsed,
        **cpu_per(before, after, args.queued, "drain"),
        "drain: share on the holder": fleet.on_holder / args.queued,
        "drain: actions lost": len({d.hash for d in digests} - set(fleet.ran)),
        "drain: actions run twice": sum(1 for n in fleet.ran.values() if n > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=1500)
    parser.add_argument("--bots", type=int, default=8)
    parser.add_argument("--queued", type=int, default=3000)
    parser.add_argument("--drain-bots", type=int, default=32)
    parser.add_argument("--roots", type=int, default=16)
    parser.add_argument("--modes", default="fifo,locality",
                        help='dispatches to compare, interleaved ("locality-nohold": locality_wait_for_holder = false; '
                             '"locality-backlogN": locality_holder_backlog = N)')
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[Metrics]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="bench-redis-locality-") as base:
        for round_number in range(args.rounds):
            order = modes if round_number % 2 == 0 else modes[::-1]
            for dispatch in order:
                tag = f"r{round_number}-{dispatch}"
                metrics = asyncio.run(one_round(Path(base) / tag, dispatch, args, tag))
                results[dispatch].append(metrics)
                print(f"round {round_number + 1} {dispatch}: " + ", ".join(
                    f"{key} {fmt(value)}" for key, value in metrics.items()), flush=True)
    print()
    print(rounds_table(results))


if __name__ == "__main__":
    main()
