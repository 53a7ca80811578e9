"""Where a locality build's fetched bytes go: bench_locality's ``--trace`` (bench-only, offline).

After a build, while its server still runs, ``trace_build`` reads back every action
the server executed (its INFO line ``executed DIGEST on WORKER``), the Action, its
input tree and its ActionResult (for the outputs and the worker's start time) from
the server's CAS and AC, and replays each worker's cache from empty in the order its
actions started: an action fetches the input files its worker neither fetched nor
made before (the worker keeps its own outputs; the replay matched the workers'
counters within a few per cent). Nothing is added to the server's or worker's hot
path.

``breakdown`` splits the replayed bytes by action kind (a library's compile, a tool's
compile, archive and shared-library steps, links) and worker, counts how many
workers fetched each component's header set, and replays the same actions under an
ideal placement (``ideal_worker``) to give the floor this build shape allows.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc

EXECUTED = re.compile(r"executed ([0-9a-f]{64})/(\d+) on (\S+):")
HEADER = re.compile(r"(?:^|/)comp(\d+)/h\d+\.h$")
KINDS = ("library compile", "tool compile", "archive / .so", "link")


@dataclass
class TracedAction:
    worker: str
    started: float
    kind: str
    component: int | None  # a library compile's component
    inputs: dict[str, tuple[str, int]]  # path -> (hash, size)
    outputs: set[str] = field(default_factory=set)  # hashes


def _kind(outputs: Iterable[str]) -> str:
    paths = list(outputs)
    if any(p.endswith(".o") for p in paths):
        return "tool compile" if any("/_objs/tool/" in p for p in paths) else "library compile"
    if any(p.endswith((".a", ".so", ".ifso")) for p in paths):
        return "archive / .so"
    return "link"


def trace_build(address: str, server_log: str) -> list[TracedAction]:
    """Every action the server's log says it executed, read back from its CAS and AC."""
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    cas = re_grpc.ContentAddressableStorageStub(channel)
    ac = re_grpc.ActionCacheStub(channel)
    blobs: dict[str, bytes] = {}

    def read(digests: list[re_pb2.Digest]) -> None:
        wanted = [d for d in digests if d.hash not in blobs]
        for start in range(0, len(wanted), 500):
            reply = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=wanted[start:start + 500]))
            for response in reply.responses:
                blobs[response.digest.hash] = response.data

    def files_of(root: re_pb2.Digest) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        pending = [("", root)]
        while pending:
            read([d for _, d in pending])
            nxt = []
            for prefix, digest in pending:
                directory = re_pb2.Directory.FromString(blobs[digest.hash])
                for f in directory.files:
                    out[prefix + f.name] = (f.digest.hash, f.digest.size_bytes)
                nxt += [(f"{prefix}{d.name}/", d.digest) for d in directory.directories]
            pending = nxt
        return out

    traced = []
    try:
        for hash_, size, worker in EXECUTED.findall(server_log):
            digest = re_pb2.Digest(hash=hash_, size_bytes=int(size))
            read([digest])
            action = re_pb2.Action.FromString(blobs[hash_])
            result = ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=digest))
            kind = _kind(f.path for f in result.output_files)
            files = files_of(action.input_root_digest)
            component = None
            if kind == "library compile":
                headers = {int(m.group(1)) for p in files if (m := HEADER.search(p))}
                component = headers.pop() if len(headers) == 1 else None
            started = result.execution_metadata.worker_start_timestamp.ToNanoseconds() / 1e9
            traced.append(TracedAction(worker, started, kind, component, files,
                                       {f.digest.hash for f in result.output_files}))
    finally:
        channel.close()
    return sorted(traced, key=lambda a: a.started)


def replay(actions: list[TracedAction], worker_of: Callable[[TracedAction], str]) -> list[tuple[TracedAction, str, dict[str, int]]]:
    """Each action, the worker it runs on and the bytes it fetches by path, each worker's
    cache starting empty and keeping what it fetched and made."""
    held: dict[str, set[str]] = defaultdict(set)
    out = []
    for action in actions:
        worker = worker_of(action)
        cache = held[worker]
        fetched: dict[str, int] = {}
        for path, (hash_, size) in action.inputs.items():
            if hash_ not in cache:
                cache.add(hash_)
                fetched[path] = size
        cache.update(action.outputs)
        out.append((action, worker, fetched))
    return out


def ideal_worker(actions: list[TracedAction], workers: list[str]) -> Callable[[TracedAction], str]:
    """An ideal placement for this build shape: each worker keeps ``components / workers``
    components (a library's compile and its archive steps run where its component
    lives), and the tool compiles and links run on the first worker. What it fetches
    is each component once, the components the tool-compile worker lacks, and the
    link inputs made elsewhere: the floor to compare a dispatch with."""
    components = sorted({a.component for a in actions if a.component is not None})
    home = {c: workers[i * len(workers) // max(len(components), 1)] for i, c in enumerate(components)}
    library_home: dict[str, str] = {}
    for action in actions:
        if action.component is not None:
            for path in action.inputs:
                if path.endswith(".cc"):
                    library_home[path.rsplit("/", 1)[0]] = home[action.component]

    def worker_of(action: TracedAction) -> str:
        if action.component is not None:
            return home[action.component]
        if action.kind == "archive / .so":
            for path in action.inputs:
                package = re.search(r"(lib\d+)/", path)
                if package:
                    for key, worker in library_home.items():
                        if key.endswith(package.group(1)):
                            return worker
        return workers[0]

    return worker_of


def breakdown(actions: list[TracedAction], measured: dict[str, int] | None = None) -> str:
    """The report: bytes by kind and worker, component header sets fetched, and the floor."""
    workers = sorted({a.worker for a in actions})
    lines = []
    for title, placed in (("as run", replay(actions, lambda a: a.worker)),
                          ("ideal placement (floor)", replay(actions, ideal_worker(actions, workers)))):
        by_kind: dict[str, Counter[str]] = defaultdict(Counter)
        counts: Counter[str] = Counter()
        header_sets: dict[int, set[str]] = defaultdict(set)
        header_bytes = 0
        for action, worker, fetched in placed:
            by_kind[action.kind][worker] += sum(fetched.values())
            counts[action.kind] += 1
            for path, size in fetched.items():
                if match := HEADER.search(path):
                    header_sets[int(match.group(1))].add(worker)
                    header_bytes += size
        total = sum(sum(c.values()) for c in by_kind.values())
        lines.append(f"  {title}: {total / 2**20:.2f} MiB; component headers {header_bytes / 2**20:.2f} MiB")
        for kind in KINDS:
            per = by_kind.get(kind, Counter())
            cells = " ".join(f"{w}={per[w] / 2**10:7.0f}" for w in workers)
            lines.append(f"    {kind:<16} {counts[kind]:4d} actions {sum(per.values()) / 2**20:6.2f} MiB  KiB: {cells}")
        fetches = " ".join(f"c{c}:{len(ws)}" for c, ws in sorted(header_sets.items()))
        lines.append(f"    workers that fetched each component's headers: {fetches}")
        if title == "as run":
            compiles = Counter((a.worker, a.component) for a in actions if a.component is not None)
            for worker in workers:
                mine = " ".join(f"c{c}:{n}" for (w, c), n in sorted(compiles.items(), key=lambda x: str(x)) if w == worker)
                lines.append(f"    {worker} library compiles by component: {mine}")
            t0 = actions[0].started if actions else 0.0
            for worker in workers:
                steps = []
                for action, w, fetched in placed:
                    if w != worker or action.kind == "archive / .so":
                        continue
                    code = {"tool compile": "T", "link": "L"}.get(action.kind, f"c{action.component}")
                    new = {int(m.group(1)) for p in fetched if (m := HEADER.search(p))}
                    steps.append(f"{action.started - t0:.1f}:{code}" + (f"+{''.join(map(str, sorted(new)))}" if new else ""))
                lines.append(f"    {worker} timeline (s:compile, +components fetched): {' '.join(steps)}")
            if measured:
                lines.append("    measured by the workers, KiB: "
                             + " ".join(f"{w}={measured.get(w, 0) / 2**10:.0f}" for w in workers))
    return "\n".join(lines)
