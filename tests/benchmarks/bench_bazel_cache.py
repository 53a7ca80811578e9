"""How much a warm reapi cache saves real Bazel: `python -m tests.benchmarks.bench_bazel_cache`.

Builds and tests the end-to-end sample workspace (tests/e2e/workspace) with Bazel
4.2.3, from clean each time, in three ways: with no remote, with an empty remote
cache (every action runs locally and is uploaded), and with a warm one (every
action is a cache hit). Wall times are the median of ``--repeat`` runs; the ratio
column is relative to the local build. Both store setups are measured: the
zero-config disk stores, and memory stores (the server's own overhead without
disk I/O). The workspace is tiny, so this measures per-action protocol cost, not
bandwidth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.bazel import BazelInstallation, BazelWorkspace, fast_tmp_root, remote_cache_flags, remove_tree
from tests.support.bazel_summary import ProcessSummary
from tests.support.server_process import reapi_server_process, server_config

WORKSPACE = Path(__file__).resolve().parents[1] / "e2e" / "workspace"
MEMORY_STORES: dict[str, dict[str, Any]] = {
    "cas-memory": {"type": "memory", "max_size": "1GiB"},
    "cas": {"type": "verify", "inner": "cas-memory"},
    "ac": {"type": "memory", "max_size": "64MiB"},
}


def timed_clean_build(ws: BazelWorkspace, flags: list[str]) -> tuple[float, ProcessSummary]:
    ws.clean()
    start = time.perf_counter()
    run = ws.test("//...", flags=flags)
    return time.perf_counter() - start, run.summary


def measure(ws: BazelWorkspace, root: Path, repeat: int) -> tuple[int, dict[str, list[float]]]:
    samples: dict[str, list[float]] = {}
    ws.test("//...")  # warm up the Bazel server and the C++ toolchain setup
    actions = 0
    for _ in range(repeat):
        seconds, summary = timed_clean_build(ws, [])
        samples.setdefault("no remote", []).append(seconds)
        actions = summary.actions
    for label, stores in (("zero-config stores", None), ("memory", MEMORY_STORES)):
        for attempt in range(repeat):
            workdir = root / f"server-{label.split()[0]}-{attempt}"
            with reapi_server_process(workdir, server_config(workdir, stores=stores)) as server:
                flags = remote_cache_flags(server.url)
                cold, _ = timed_clean_build(ws, flags)
                warm, summary = timed_clean_build(ws, flags)
            if not summary.all_remote_cache_hits:
                raise SystemExit(f"the warm {label} build was not all cache hits: {summary}")
            samples.setdefault(f"{label}: empty cache (run + upload)", []).append(cold)
            samples.setdefault(f"{label}: warm cache (all hits)", []).append(warm)
    return actions, samples


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="reapi-bench-bazel-", dir=fast_tmp_root()))
    installation = BazelInstallation.find(root)
    ws = installation.workspace(WORKSPACE, root / "ws")
    try:
        actions, samples = measure(ws, root, args.repeat)
    finally:
        installation.shutdown_all()
        remove_tree(root)

    print(f"sample workspace: {actions} actions; `bazel test //...` from clean; median of {args.repeat}")
    print(f"{'build':36} {'seconds':>8} {'vs no remote':>13}")
    baseline = statistics.median(samples["no remote"])
    for name, values in samples.items():
        seconds = statistics.median(values)
        print(f"{name:36} {seconds:8.2f} {seconds / baseline:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
