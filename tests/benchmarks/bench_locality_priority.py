"""Priority and fairness under locality dispatch (issue 13, acceptance 4): ``fifo`` against ``locality``.

    .venv/bin/python -m tests.benchmarks.bench_locality_priority [--rounds 2] [--states memory,redis]
        [--queued 4000] [--drain-bots 32] [--roots 16] [--urgent 100] [--modes fifo,locality] [--worst N]
        [--before DIR]

``--before DIR``: a mode ending in ``-before`` (``locality-before``) runs the server from
the source tree in DIR (on PYTHONPATH; e.g. ``git archive COMMIT cas server worker
remote_apis_protos | tar -x -C DIR``), so a change is measured before and after,
interleaved, in one sitting.

Per round, state and dispatch (fifo and locality interleaved, the order turned each
round): a new reapi-server process (memory stores; with ``redis`` its scheduler state
in a new redis-server) and the workload and bots of bench_redis_locality: ``--roots``
input roots of 4 x 32 KiB files, each test bot saying once (an 8 KiB summary) that it
holds the roots ``r`` with ``r mod bots`` its index, and finishing every action at once.
``--queued`` actions (one root each, in turn) are queued, then ``--drain-bots`` bots
take them while a probe process sends ``--urgent`` priority -1000 actions one by one,
each with one of the roots as its input (so locality has a holder to prefer, and
possibly to wait for). Rows, median (range) of the rounds:

- urgent: Execute-to-EXECUTING, p50 and p99 ms, over the urgent actions that reached
  EXECUTING while the deep queue was still draining (how many did is a row too);
- fairness: for each queued action, how many actions queued after it were given to a
  bot before it (its "overtaken by" count; as seen by the bots, so 32 submitters and
  32 bots blur fifo's order a little too): the maximum and the p99;
- drain: dispatches/s, and CPU ms per dispatch of the server and of redis-server (the
  urgent probe's few Executes included); every action must run exactly once (lost and
  run twice are counted, not assumed).

The machine may be shared and has few cores: read ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import tempfile
import time
from pathlib import Path

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.benchmarks.bench_execution import Actions, ms, until_stage
from tests.benchmarks.bench_redis_locality import EXECUTION, Fleet, Metrics, Workload, cpu, cpu_per
from tests.benchmarks.bench_replicas import fmt, rounds_table
from tests.support.redis_process import RedisProcess
from tests.support.server_process import reapi_server_process, server_config
from tests.support.test_bot import TestBot

QUEUED = re_pb2.ExecutionStage.QUEUED
EXECUTING = re_pb2.ExecutionStage.EXECUTING


class OrderedFleet(Fleet):
    """A Fleet that also keeps the order in which its bots were given actions."""

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        self.order: list[str] = []

    def _finish(self, bot: TestBot, index: int) -> None:
        self.order += [le.action_digest.hash for le in bot.leases.values() if le.completed is None]
        super()._finish(bot, index)


def overtaken(submitted: list[str], given: list[str]) -> list[int]:
    """For each action in ``submitted`` order that was given, how many submitted later were given before it."""
    position = {digest: i for i, digest in enumerate(submitted)}
    seen: list[int] = []
    counts = []
    for digest in given:
        index = position.get(digest)
        if index is None:
            continue  # an urgent action
        counts.append(len(seen) - bisect.bisect_right(seen, index))
        bisect.insort(seen, index)
    return counts


def root_digest(text: str) -> Digest:
    hash_hex, _, size = text.partition("/")
    return Digest.parse(hash_hex, int(size))


async def probe(address: str, roots: list[str], count: int) -> None:
    """Print, per urgent action, the wall-clock time it was sent and its Execute-to-EXECUTING seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        uploader = Actions(channel, prefix="urgent")
        [command] = await uploader.upload([re_pb2.Command(arguments=["true"]).SerializeToString()])
        actions = [re_pb2.Action(command_digest=command.to_proto(),
                                 input_root_digest=root_digest(roots[i % len(roots)]).to_proto(),
                                 salt=f"urgent-{i}".encode()).SerializeToString() for i in range(count)]
        digests = await uploader.upload(actions)
        stub = re_grpc.ExecutionStub(channel)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the drain has begun
        for digest in digests:
            sent, begin = time.time(), time.perf_counter()
            await until_stage(stub, digest, EXECUTING, priority=-1000)
            print(sent, time.perf_counter() - begin, flush=True)


async def measure(address: str, pids: dict[str, int], args: argparse.Namespace, tag: str) -> Metrics:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = re_grpc.ExecutionStub(channel)
        workload = Workload(channel, args.roots, tag)
        await workload.upload_roots(tag)
        digests = await workload.actions(args.queued, f"{tag}-drain")
        submitted: list[str] = []
        pending = iter(digests)

        async def submitter() -> None:
            for digest in pending:
                submitted.append(digest.hash)
                await until_stage(stub, digest, QUEUED)

        await asyncio.gather(*(submitter() for _ in range(32)))
        prober = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.benchmarks.bench_locality_priority", "--probe", address,
            "--urgent", str(args.urgent), *(f"--root={root.hash}/{root.size_bytes}" for root in workload.roots),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert prober.stdin is not None and prober.stdout is not None
        assert (await prober.stdout.readline()).strip() == b"ready"
        fleet = OrderedFleet(workload)
        queued = {d.hash for d in digests}
        start, cpu_before = time.perf_counter(), cpu(pids)
        await fleet.start(channel, args.drain_bots, f"{tag}-drainer")
        prober.stdin.write(b"go\n")
        await prober.stdin.drain()
        while len(queued & fleet.ran.keys()) < args.queued:
            await asyncio.sleep(0.02)
        drained_at, elapsed, cpu_after = time.time(), time.perf_counter() - start, cpu(pids)
        output, _ = await prober.communicate()
        await asyncio.sleep(1.0)  # anything run twice would show up now
        await fleet.stop()
    urgent = [float(took) for sent, took in (line.split() for line in output.decode().splitlines())
              if float(sent) + float(took) <= drained_at]
    counts = overtaken(submitted, fleet.order)
    if args.worst:
        given = [d for d in fleet.order if d in queued]
        for k in sorted(range(len(given)), key=lambda k: -counts[k])[: args.worst]:
            print(f"  overtaken by {counts[k]}: queued {submitted.index(given[k])}th, given {k}th, "
                  f"root {workload.root_of[given[k]]}")
    return {
        "urgent during the drain: count": len(urgent),
        "urgent: Execute-to-EXECUTING p50 ms": ms(urgent, 0.5) if urgent else float("nan"),
        "urgent: Execute-to-EXECUTING p99 ms": ms(urgent, 0.99) if urgent else float("nan"),
        "queued: overtaken by, max": max(counts, default=0),
        "queued: overtaken by, p99": sorted(counts)[int(0.99 * (len(counts) - 1))] if counts else 0,
        "drain: dispatches/s": args.queued / elapsed,
        **cpu_per(cpu_before, cpu_after, args.queued, "drain"),
        "drain: actions lost": len(queued - fleet.ran.keys()),
        "drain: actions run twice": sum(1 for n in fleet.ran.values() if n > 1),
    }


async def one_round(root: Path, state: str, mode: str, args: argparse.Namespace, tag: str) -> Metrics:
    redis = RedisProcess(root / "redis") if state == "redis" else None
    dispatch = mode.removesuffix("-before")
    # PYTHONSAFEPATH: ``python -m`` would put the working directory (this checkout) first on sys.path
    env = {"PYTHONPATH": args.before, "PYTHONSAFEPATH": "1"} if dispatch != mode else None
    if env is not None and not args.before:
        raise SystemExit(f"mode {mode} needs --before DIR")
    try:
        execution: dict[str, object] = {**EXECUTION, "dispatch": dispatch.removesuffix("-nohold")}
        if dispatch.endswith("-nohold"):
            execution["locality_wait_for_holder"] = False
        if redis is not None:
            redis.start()
            execution.update(state="redis", redis_url=redis.url)
        stores = {"cas": {"type": "memory"}, "ac": {"type": "memory"}}
        config = server_config(root / "server", stores=stores, execution=execution)
        with reapi_server_process(root / "server", config, log_level="WARNING", env=env) as server:
            pids = {"server": server.process.pid} | ({"redis": redis.pid} if redis is not None else {})
            return await measure(server.address, pids, args, tag)
    finally:
        if redis is not None:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--root", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--states", default="memory,redis")
    parser.add_argument("--queued", type=int, default=4000)
    parser.add_argument("--drain-bots", type=int, default=32)
    parser.add_argument("--roots", type=int, default=16)
    parser.add_argument("--urgent", type=int, default=100)
    parser.add_argument("--worst", type=int, default=0, help="print the N most overtaken queued actions per build")
    parser.add_argument("--modes", default="fifo,locality",
                        help='dispatches to compare, interleaved ("locality-nohold": locality_wait_for_holder = false; '
                             '"...-before": the server of --before)')
    parser.add_argument("--before", default="", help="source tree the -before modes' server runs from")
    args = parser.parse_args()
    if args.probe:
        asyncio.run(probe(args.probe, args.root, args.urgent))
        return
    for state in args.states.split(","):
        modes = args.modes.split(",")
        results: dict[str, list[Metrics]] = {mode: [] for mode in modes}
        with tempfile.TemporaryDirectory(prefix="bench-locality-priority-") as base:
            for round_number in range(args.rounds):
                order = modes if round_number % 2 == 0 else modes[::-1]
                for dispatch in order:
                    tag = f"{state}-r{round_number}-{dispatch}"
                    metrics = asyncio.run(one_round(Path(base) / tag, state, dispatch, args, tag))
                    results[dispatch].append(metrics)
                    print(f"{state} round {round_number + 1} {dispatch}: " + ", ".join(
                        f"{key} {fmt(value)}" for key, value in metrics.items()), flush=True)
        print(f"\n{state} state:\n{rounds_table(results)}\n", flush=True)


if __name__ == "__main__":
    main()
