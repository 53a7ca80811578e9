"""Issue 11, acceptance 2 (the suite's size): real Bazel through deploy/replicated/up.sh.

up.sh starts Redis, two storage nodes, two frontend replicas, haproxy and two
workers; Bazel builds a generated C++ workspace with every action remote through
the balancer, and frontend-1 is killed with SIGKILL mid-build. The build must pass
with every action remote, and after ``bazel clean`` the rebuild must be all cache
hits. down.sh then stops everything. The few-hundred-action run of the same steps
is tests/benchmarks/bench_replicated.py (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.benchmarks.bench_worker import generate_cc_workspace
from tests.conftest import REPO_ROOT
from tests.support.bazel import BazelInstallation, remote_execution_flags
from tests.support.bazel_summary import REMOTE, REMOTE_CACHE_HIT
from tests.support.processes import pid_alive

UP = REPO_ROOT / "deploy" / "replicated" / "up.sh"
DOWN = REPO_ROOT / "deploy" / "replicated" / "down.sh"
PROCESSES = ("redis", "storage-1", "storage-2", "frontend-1", "frontend-2", "haproxy", "worker-1", "worker-2")
LIBRARIES = 16
KILL_AFTER_ACTIONS = 4
PROBLEM = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\bCRITICAL\b")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "replicated"
    subprocess.run([str(UP), str(root)], check=True, timeout=180)
    try:
        yield root
    finally:
        subprocess.run([str(DOWN), str(root)], check=True, timeout=180)


def actions_run(root: Path) -> int:
    return sum((root / f"worker-{n}.log").read_text().count(": OK (ran") for n in (1, 2))


def kill_frontend_when_busy(root: Path, done: threading.Event) -> None:
    """SIGKILL frontend-1 once the workers have run a few actions (the build goes on)."""
    while actions_run(root) < KILL_AFTER_ACTIONS and not done.is_set():
        time.sleep(0.1)
    os.kill(int((root / "frontend-1.pid").read_text()), signal.SIGKILL)


def test_bazel_through_the_balancer_survives_a_killed_frontend(
    deployment: Path, bazel: BazelInstallation, tmp_path: Path
) -> None:
    endpoint = (deployment / "endpoint").read_text().strip()
    assert re.fullmatch(r"grpc://127\.0\.0\.1:\d+", endpoint), endpoint
    pids = {name: int((deployment / f"{name}.pid").read_text()) for name in PROCESSES}
    assert all(pid_alive(pid) for pid in pids.values()), pids

    source = tmp_path / "cc-source"
    generate_cc_workspace(source, LIBRARIES)
    ws = bazel.workspace(source, tmp_path / "cc-ws")
    flags = [*remote_execution_flags(endpoint), "--jobs=8"]
    done = threading.Event()
    killer = threading.Thread(target=kill_frontend_when_busy, args=(deployment, done))
    killer.start()
    try:
        first = ws.build("//:main", flags=flags)
    finally:
        done.set()
        killer.join()
    assert not pid_alive(pids["frontend-1"]), "the build ended before frontend-1 was killed"
    assert first.summary.actions == LIBRARIES + 2, first.summary
    assert first.summary.count(REMOTE) == first.summary.actions, f"not every action ran remotely: {first.summary}"
    assert subprocess.run([str(ws.bazel_bin / "main")], capture_output=True, check=True).stdout.strip()

    ws.clean()
    again = ws.build("//:main", flags=flags)
    assert again.summary.count(REMOTE_CACHE_HIT) == again.summary.actions == first.summary.actions, again.summary

    for name in PROCESSES:
        if name != "frontend-1":
            problems = [line for line in (deployment / f"{name}.log").read_text().splitlines() if PROBLEM.search(line)]
            assert not problems, f"{name} logged errors:\n" + "\n".join(problems)

    subprocess.run([str(DOWN), str(deployment)], check=True, timeout=180)
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list(deployment.glob("*.pid"))
