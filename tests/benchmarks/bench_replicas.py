"""Replicated frontends (Redis state) against one frontend with the in-memory state.

    .venv/bin/python -m tests.benchmarks.bench_replicas [--sequential 300] [--concurrent 2000]
        [--cas-rounds 200] [--bots 1000] [--queued 100000] [--skip-drain] [--skip-latency]

The topology is deploy/replicated's, from its own config files: a redis-server (AOF
everysec), two storage nodes (storage.toml), frontends (frontend.toml: CAS mirrored
over the nodes, action cache and scheduler state in Redis); the memory baseline is
the same file with ``state = "memory"`` and one frontend. Clients and test bots
(tests/support/test_bot.py, finishing every action at once, so the numbers are the
control plane's own cost) run in this process, spread round robin over the
frontends. Rows, each for 1 frontend (memory state), 1 and 2 frontends (Redis state):

- Execute-to-COMPLETED, sequential, one bot (median, p90, p99 ms);
- 50 concurrent Execute streams, 8 bots: actions/s;
- CPU per action of each process kind (frontend, storage node, redis-server);
- CPU per CAS call of a frontend and of a storage node: BatchUpdateBlobs of 100 x
  1 KiB new blobs, FindMissingBlobs of 1,000, BatchReadBlobs of 100 x 1 KiB, a 1 MiB
  ByteStream write and read;
- the drain (issue 11, acceptance 5): ``--queued`` actions queued through every
  frontend, then ``--bots`` bots spread over them take everything; every action
  must reach exactly one bot once (checked: none lost, none run twice); the drain
  rate, CPU per dispatch, and meanwhile the Execute-to-EXECUTING time of 200
  priority -1000 actions (a probe process), for 3 frontends (Redis) against 1
  (memory).

The machine may be shared and has few cores: every process here competes for
them. Read ratios within one run, and the CPU columns, rather than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
import tomllib
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

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

    @property
    def label(self) -> str:
        return f"{self.count} frontend{'s' if self.count > 1 else ''}, {self.state} state"

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}


def cpu_by_kind(before: dict[str, float], after: dict[str, float], per: int) -> str:
    """CPU ms per unit of work of each process kind (frontends summed, nodes summed)."""
    kinds: dict[str, float] = {}
    for name in before:
        kind = name.split("-")[0]
        kinds[kind] = kinds.get(kind, 0.0) + after[name] - before[name]
    return ", ".join(f"{kind} {seconds / per * 1000:.2f}" for kind, seconds in kinds.items())


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


async def latency_rows(topology: Topology, sequential: int, concurrent: int) -> list[str]:
    chans = await channels(topology)
    stubs = [re_grpc.ExecutionStub(c) for c in chans]
    digests = await Actions(chans[0], prefix=f"lat-{topology.count}-{topology.state}").make(sequential + concurrent + 50)
    tasks = await start_bots(chans, 1, "seq")
    for i, digest in enumerate(digests[:50]):
        await execute(stubs[i % len(stubs)], digest)
    before = topology.cpu()
    times = []
    for i, digest in enumerate(digests[50 : 50 + sequential]):
        start = time.perf_counter()
        await execute(stubs[i % len(stubs)], digest)
        times.append(time.perf_counter() - start)
    sequential_cpu = cpu_by_kind(before, topology.cpu(), sequential)
    await stop(tasks)

    tasks = await start_bots(chans, 8, "tput")
    pending = iter(enumerate(digests[50 + sequential :]))

    async def client() -> None:
        for i, digest in pending:
            await execute(stubs[i % len(stubs)], digest)

    before = topology.cpu()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(50)))
    elapsed = time.perf_counter() - start
    concurrent_cpu = cpu_by_kind(before, topology.cpu(), concurrent)
    await stop(tasks)
    for channel in chans:
        await channel.close()
    return [
        f"| {topology.label}: Execute-to-COMPLETED, sequential, 1 bot | median {ms(times, 0.5):.2f} ms, "
        f"p90 {ms(times, 0.9):.2f} ms, p99 {ms(times, 0.99):.2f} ms; CPU ms per action: {sequential_cpu} |",
        f"| {topology.label}: 50 concurrent Executes, 8 bots ({concurrent} actions) | {concurrent / elapsed:.0f} "
        f"actions/s; CPU ms per action: {concurrent_cpu} |",
    ]


async def cas_rows(topology: Topology, rounds: int) -> list[str]:
    [channel] = (await channels(topology))[:1]
    cas = re_grpc.ContentAddressableStorageStub(channel)
    bytestream = bs_grpc.ByteStreamStub(channel)
    counter = itertools.count()

    def blobs(count: int, size: int) -> dict[Digest, bytes]:
        datas = [f"{next(counter)}:".encode().ljust(size, b"x") for _ in range(count)]
        return {Digest.of(d): d for d in datas}

    async def update(values: dict[Digest, bytes]) -> None:
        await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=d.to_proto(), data=v) for d, v in values.items()]))

    present = blobs(1000, 1024)
    await update(present)
    ids = list(present)
    rows = []

    async def measure(label: str, call: Any) -> None:
        before = topology.cpu()
        for _ in range(rounds):
            await call()
        after = topology.cpu()
        frontend = (after["frontend-1"] - before["frontend-1"]) / rounds * 1000
        nodes = sum(after[f"storage-{n}"] - before[f"storage-{n}"] for n in (1, 2)) / rounds * 1000
        rows.append(f"| CPU per CAS call: {label} | frontend {frontend:.2f} ms, storage nodes {nodes:.2f} ms |")

    await measure("BatchUpdateBlobs, 100 new 1 KiB blobs", lambda: update(blobs(100, 1024)))
    await measure("FindMissingBlobs, 1,000 present", lambda: cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[d.to_proto() for d in ids])))
    await measure("BatchReadBlobs, 100 x 1 KiB", lambda: cas.BatchReadBlobs(
        re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in ids[:100]])))

    async def write_one() -> None:
        [(digest, data)] = blobs(1, 1 << 20).items()
        name = f"uploads/{next(counter)}/blobs/{digest.hash}/{digest.size_bytes}"
        await bytestream.Write(iter([bs_pb2.WriteRequest(resource_name=name, data=data, finish_write=True)]))
        last[0] = digest

    last: list[Digest] = []
    last.append(Digest.of(b""))
    await measure("ByteStream write, 1 MiB new", write_one)
    await measure("ByteStream read, 1 MiB", lambda: _read(bytestream, last[0]))
    await channel.close()
    return rows


async def _read(bytestream: bs_grpc.ByteStreamStub, digest: Digest) -> None:
    async for _ in bytestream.Read(bs_pb2.ReadRequest(resource_name=f"blobs/{digest.hash}/{digest.size_bytes}")):
        pass


async def drain_rows(topology: Topology, queued: int, bots: int) -> list[str]:
    chans = await channels(topology)
    stubs = [re_grpc.ExecutionStub(c) for c in chans]
    digests = await Actions(chans[0], prefix=f"drain-{topology.count}").make(queued)
    pending = iter(enumerate(digests))

    async def submitter() -> None:
        for i, digest in pending:
            await until_stage(stubs[i % len(stubs)], digest, QUEUED)

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(128)))
    submit_rate = queued / (time.perf_counter() - start)
    ran: Counter[str] = Counter()
    tasks = await start_bots(chans, bots, f"drainer-{topology.count}", ran)
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
    await asyncio.sleep(1.0)  # anything run twice would show up now
    await stop(tasks)
    wanted = {d.hash for d in digests}
    lost = len(wanted - set(ran))
    twice = sum(1 for n in ran.values() if n > 1)
    dispatches = sum(ran.values())
    for channel in chans:
        await channel.close()
    return [
        f"| {topology.label}: submit {queued:,} actions (until QUEUED, 128 clients) | {submit_rate:.0f} actions/s |",
        f"| {topology.label}: {bots} bots drain {queued:,} queued + {len(urgent)} urgent | {elapsed:.0f} s, "
        f"{dispatches / elapsed:.0f} dispatches/s; lost {lost}, run twice {twice}; CPU ms per dispatch: "
        f"{cpu_by_kind(before, after, dispatches)}, clients + bots {own / dispatches * 1000:.2f} |",
        f"| {topology.label}: meanwhile, priority -1000 Execute-to-EXECUTING (200 sequential) | "
        f"p50 {ms(urgent, 0.5):.1f} ms, p99 {ms(urgent, 0.99):.1f} ms |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--cas-rounds", type=int, default=200)
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args()
    print("| measurement | result |\n|---|---|", flush=True)
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        if not args.skip_latency:
            for state, count in (("memory", 1), ("redis", 1), ("redis", 2)):
                with Topology(Path(tmp) / f"lat-{state}-{count}", state, count) as topology:
                    print(*asyncio.run(latency_rows(topology, args.sequential, args.concurrent)), sep="\n", flush=True)
                    if (state, count) == ("redis", 1):
                        print(*asyncio.run(cas_rows(topology, args.cas_rounds)), sep="\n", flush=True)
        if not args.skip_drain:
            for state, count in (("memory", 1), ("redis", 3)):
                with Topology(Path(tmp) / f"drain-{state}-{count}", state, count) as topology:
                    print(*asyncio.run(drain_rows(topology, args.queued, args.bots)), sep="\n", flush=True)
    print("\nCPU columns: ms per unit, summed over the processes of each kind (frontend, storage, redis)")


if __name__ == "__main__":
    main()
