"""The worker's input fetch against a plain BuildGrid-convention bot, on each filesystem, interleaved.

    .venv/bin/python -m tests.benchmarks.bench_input_fetch [--files 1000] [--runs 15]
        [--fs /dev/shm --fs /var/tmp] [--baseline PATH] [--cold-only]

For each filesystem (``--fs``, default tmpfs and the work disk) one reapi-server
process with the zero-config stores there, and, connected at once and on that same
filesystem, a reapi-worker (this checkout, "now": with its defaults this tree's
subtrees are mounted), another that never mounts ("links": ``input_mounts = false``,
every input placed in the exec root), the plain bot
(tests/benchmarks/plain_bot.py) and, with ``--baseline`` (a checkout of an earlier commit, e.g. made by ``git worktree
add``), a reapi-worker running that code (``--whole-baseline``: against a reapi-server of that code too, with its
own stores, which every tree is uploaded to as well: for changes on both sides of the lease). Each action goes to one of them by a platform
property; the client runs them one at a time, interleaved (bot order rotates every run),
so the machine's noise hits all alike. Per run, with a new tree of ``--files`` small files
(100 per directory):

- cold: the tree is new to every bot;
- warm: the same input root again (the plain bot has no cache, so it is cold again);
- 10 changed: a new root where 10 files of one directory differ from the warm one.

Rows: the input fetch as the bot stamped it (input_fetch_start -> completed, median
and p90 ms); queued -> fetched (the server's queued_timestamp -> input_fetch_completed:
the lease's delivery counted too, which is the fair figure when a lease carries inputs,
docs/BOTS_PROTOCOL.md section 7); the fetch + run phases (inputs placed by mounting are
set up when the sandbox starts, so run includes that), and Execute end to end at the
client. The ratio lines give both fetch figures against the plain bot's.

``--cold-only`` runs cold trees only (three times as many per minute, for the long
interleaved loops that tell a few milliseconds apart on a busy machine) and breaks
the fair figure down: queued -> the bot's start (the lease's delivery, with any
files it carries) and the bot's own input fetch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.benchmarks.bench_worker import Client, ms, stores, timed
from tests.support.logged_process import LoggedProcess
from tests.support import toml_writer
from tests.support.server_process import LISTENING, reapi_server_process, server_config
from tests.support.worker_process import SESSION_CREATED, launch_worker, stop_worker, worker_command

PROPERTY = "bench-bot"


def tree_of(directories: list[list[bytes]]) -> tuple[Digest, dict[Digest, bytes]]:
    """An input root with one directory per list of file contents."""
    blobs: dict[Digest, bytes] = {}
    root = re_pb2.Directory()
    for d, contents in enumerate(directories):
        directory = re_pb2.Directory()
        for f, data in enumerate(contents):
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


def new_contents(files: int, per_dir: int = 100) -> list[list[bytes]]:
    return [[os.urandom(64) + f"file {d}/{f}\n".encode() for f in range(min(per_dir, files - d * per_dir))]
            for d in range((files + per_dir - 1) // per_dir)]


def changed(contents: list[list[bytes]], count: int) -> list[list[bytes]]:
    """The same tree with ``count`` files of its first directory changed."""
    out = [list(directory) for directory in contents]
    for f in range(count):
        out[0][f] = os.urandom(64) + b"changed\n"
    return out


class RoutedClient(Client):
    """The benchmark client, with actions sent to one bot by a platform property."""

    def run(self, bot: str, command_argv: list[str], root: Digest) -> tuple[float, re_pb2.ExecuteResponse]:
        platform = self.platform
        self.platform = re_pb2.Platform(properties=[*platform.properties, re_pb2.Platform.Property(name=PROPERTY, value=bot)])
        try:
            command = self.command(command_argv)
            action = self.action(command, root)
        finally:
            self.platform = platform
        return timed(lambda: self.execute(action))


def start_plain_bot(workdir: Path, address: str) -> LoggedProcess:
    command = [sys.executable, "-m", "tests.benchmarks.plain_bot", "--server", address, "--work-dir", str(workdir / "work"),
               "--property", "OSFamily=linux", "--property", f"{PROPERTY}=plain", "--bot-id", "plain-bot"]
    process = LoggedProcess("plain bot", command, workdir / "bot.log", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    process.start()
    process.wait_for_log(SESSION_CREATED, 30)
    return process


@contextmanager
def baseline_server(workdir: Path, baseline: Path, env: dict[str, str]) -> Iterator[str]:
    """A reapi-server running ``baseline``'s code (zero-config stores under ``workdir``); its address."""
    workdir.mkdir(parents=True)
    config_path = workdir / "server.toml"
    config_path.write_text(toml_writer.dumps(server_config(workdir, stores=stores(workdir / "data"))))
    process = LoggedProcess("reapi-server before", [sys.executable, "-m", "server.app", "--config", str(config_path),
                                                    "--log-level", "WARNING"], workdir / "server.log", env=env, cwd=baseline)
    process.start()
    try:
        yield process.wait_for_log(LISTENING, 60).group(1)
    finally:
        process.stop()


def bench_filesystem(base: Path, files: int, runs: int, baseline: Path | None,
                     cold_only: bool = False, whole_baseline: bool = False) -> dict[tuple[str, str], list]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=base))
    os.chmod(workdir, 0o711)  # the action user passes through to its exec roots
    samples: dict[tuple[str, str], list] = defaultdict(list)
    workers = []
    plain = None
    try:
        config = server_config(workdir / "server", stores=stores(workdir / "server" / "data"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "REAPI_LOG_LEVEL": "WARNING"}
        with reapi_server_process(workdir / "server", config) as server, ExitStack() as servers:
            bots = ["now", "links", "plain"]
            before_address = server.address
            if baseline is not None and whole_baseline:
                before_address = servers.enter_context(baseline_server(workdir / "before-server", baseline, env))
            linking = workdir / "links.toml"
            linking.write_text("[worker]\ninput_mounts = false\n")
            for bot, extra in (("now", []), ("links", ["--config", str(linking)])):
                workers.append(launch_worker(
                    worker_command(workdir / bot, server.address, bot_id=bot, concurrency=1,
                                   properties=[f"{PROPERTY}={bot}"], extra_args=["--log-level", "INFO", *extra]),
                    workdir / bot, bot, env))
            if baseline is not None:
                bots.append("before")
                command = worker_command(workdir / "before", before_address, bot_id="before", concurrency=1,
                                         properties=[f"{PROPERTY}=before"], extra_args=["--log-level", "INFO"])
                process = LoggedProcess("reapi-worker before", command, workdir / "before" / "worker.log", env=env,
                                        cwd=baseline)
                process.start()
                process.wait_for_log(SESSION_CREATED, 30)
                from tests.support.worker_process import WorkerProcess
                workers.append(WorkerProcess(process, "before", workdir / "before"))
            plain = start_plain_bot(workdir / "plain", server.address)
            client = RoutedClient(server.address)
            clients = {bot: client for bot in bots}
            if before_address != server.address:
                clients["before"] = RoutedClient(before_address)
            uploads = list({id(c): c for c in clients.values()}.values())
            argv = ["/bin/true"]
            for bot in bots:  # warm up connections and the bots' code paths
                root, blobs = tree_of(new_contents(10))
                clients[bot].upload(blobs)
                clients[bot].run(bot, argv, root)
            for run in range(runs):
                order = bots[run % len(bots):] + bots[:run % len(bots)]
                contents = new_contents(files)
                root, blobs = tree_of(contents)
                if not cold_only:
                    edited_root, edited_blobs = tree_of(changed(contents, 10))
                for each in uploads:
                    each.upload(blobs)
                    if not cold_only:
                        each.upload(edited_blobs)
                for bot in order:
                    samples[(bot, "cold")].append(clients[bot].run(bot, argv, root))
                if cold_only:
                    continue
                for bot in order:
                    samples[(bot, "warm")].append(clients[bot].run(bot, argv, root))
                for bot in order:
                    samples[(bot, "10 changed")].append(clients[bot].run(bot, argv, edited_root))
            for process in [w.process for w in workers] + [plain]:
                problems = process.problems()
                if problems:
                    print(f"{process.name} logged problems:\n" + "\n".join(problems[:10]), file=sys.stderr)
    finally:
        for worker in workers:
            stop_worker(worker)
        if plain is not None:
            plain.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return samples


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):6.1f} (p90 {ordered[int(len(ordered) * 0.9)]:6.1f})"


def fs_name(path: Path) -> str:
    found = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True).stdout.split()
    return f"{path} ({found[-1] if found else '?'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--fs", type=Path, action="append", default=[])
    parser.add_argument("--baseline", type=Path, help="a checkout whose reapi-worker is measured alongside")
    parser.add_argument("--cold-only", action="store_true", help="cold trees only, with the fair figure broken down")
    parser.add_argument("--whole-baseline", action="store_true",
                        help="the baseline's worker talks to a server of the baseline's code (its own stores)")
    args = parser.parse_args()
    filesystems = args.fs or [Path("/dev/shm"), Path("/var/tmp")]
    for base in filesystems:
        samples = bench_filesystem(base, args.files, args.runs, args.baseline, args.cold_only, args.whole_baseline)
        print(f"\n{fs_name(base)}: {args.files} input files, {args.runs} runs, ms")
        print(f"{'bot':<8} {'tree':<11} {'input fetch':>22} {'queued -> fetched':>22} {'fetch + run':>22} "
              f"{'Execute':>22}")
        fetches: dict[tuple[str, str], float] = {}
        delivered: dict[tuple[str, str], float] = {}
        for (bot, kind), results in sorted(samples.items(), key=lambda item: (item[0][1], item[0][0])):
            metas = [r.result.execution_metadata for _, r in results]
            fetch = [ms(m.input_fetch_completed_timestamp) - ms(m.input_fetch_start_timestamp) for m in metas]
            queued = [ms(m.input_fetch_completed_timestamp) - ms(m.queued_timestamp) for m in metas]
            fetch_run = [ms(m.execution_completed_timestamp) - ms(m.input_fetch_start_timestamp) for m in metas]
            fetches[(bot, kind)] = statistics.median(fetch)
            delivered[(bot, kind)] = statistics.median(queued)
            print(f"{bot:<8} {kind:<11} {summary(fetch):>22} {summary(queued):>22} {summary(fetch_run):>22} "
                  f"{summary([t for t, _ in results]):>22}")
        if args.cold_only:
            print(f"{'bot':<8} {'queued -> start':>22} {'start -> fetched':>22} {'load average':>14}")
            for bot, kind in sorted(key for key in samples if key[1] == "cold"):
                metas = [r.result.execution_metadata for _, r in samples[(bot, kind)]]
                delivery = [ms(m.worker_start_timestamp) - ms(m.queued_timestamp) for m in metas]
                rest = [ms(m.input_fetch_completed_timestamp) - ms(m.worker_start_timestamp) for m in metas]
                print(f"{bot:<8} {summary(delivery):>22} {summary(rest):>22} {os.getloadavg()[0]:>14.2f}")
            # Each run's bots ran back to back: a per-run ratio cancels load that changes between runs.
            fair = {bot: [ms(r.result.execution_metadata.input_fetch_completed_timestamp)
                          - ms(r.result.execution_metadata.queued_timestamp) for _, r in samples[(bot, "cold")]]
                    for bot, kind in samples if kind == "cold"}
            for one, against in (("now", "plain"), ("now", "before"), ("before", "plain")):
                if one in fair and against in fair:
                    per_run = sorted(a / b for a, b in zip(fair[one], fair[against]))
                    print(f"queued -> fetched, {one} / {against} per run, cold: median {statistics.median(per_run):.3f}x "
                          f"(quartiles {per_run[len(per_run) // 4]:.3f}-{per_run[3 * len(per_run) // 4]:.3f})")
        for kind in ("cold", "warm", "10 changed"):
            for label, medians in (("input fetch", fetches), ("queued -> fetched", delivered)):
                plain = medians.get(("plain", kind))
                if plain:
                    ratios = ", ".join(f"{bot} {medians[(bot, k)] / plain:.2f}x" for bot, k in sorted(medians)
                                       if k == kind and bot != "plain")
                    print(f"{label} against the plain bot, {kind}: {ratios}")


if __name__ == "__main__":
    main()
