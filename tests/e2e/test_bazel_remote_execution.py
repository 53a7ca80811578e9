"""Issue 4, acceptance 1: real Bazel runs every action on a reapi-worker.

Bazel 4.2.3 tests the sample workspace (genrules, cc_library, cc_binary, cc_test,
sh_tests including a sharded one and one printing over 1 MB, an output directory
holding a symlink) with ``--remote_executor --spawn_strategy=remote`` against a
real ``reapi-server`` process and a real ``reapi-worker`` process. Every action must
run remotely, the outputs must be byte-identical to a build with no remote at all,
a failing test must be reported failed with its log, and after ``bazel clean`` the
rebuild must take every action from the action cache the worker's results filled.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import SAMPLE_TESTS, LocalBuild
from tests.support.bazel import BazelWorkspace, fast_tmp_root, remote_execution_flags, remove_tree
from tests.support.bazel_execlog import cache_misses, read_execution_log
from tests.support.bazel_summary import REMOTE, REMOTE_CACHE_HIT
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.worker_process import WorkerProcess, reapi_worker_process

BIG_OUTPUT_BYTES = 1_500_000
# //tree:listing runs `find . -type f` over a tree artifact. In Bazel's local sandbox
# the tree's files are symlinks, so the local listing is empty (the hash of no
# input); on a worker they are real files, as in the tree itself. It is compared
# with the tree's own files instead of with the local build.
LISTING = "tree/listing.txt"
KEY_OUTPUTS = ("gen/greeting.txt", "gen/shout.txt", "cc/hello", "cc/greet_test", "tree/listing.txt",
               "tree/files/nested/deeper/numbers.txt")


@pytest.fixture
def worker_root(tmp_path: Path) -> Iterator[Path]:
    """The worker's cache and exec roots, on tmpfs when there is one (thousands of small files).

    Its log is copied next to the server's when the test ends, for post-mortems. The
    action user may pass through it, so actions run in bwrap as that user.
    """
    root = Path(tempfile.mkdtemp(prefix="reapi-worker-", dir=fast_tmp_root()))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        if (root / "worker.log").exists():
            shutil.copy(root / "worker.log", tmp_path / "worker.log")
        remove_tree(root)


def listed_files(listing: Path) -> dict[str, str]:
    """``sha256sum`` lines of the listing as {path inside the tree: hash}."""
    out = {}
    for line in listing.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.removeprefix("./")] = digest
    return out


def tree_files(entries: dict[str, str]) -> dict[str, str]:
    prefix = "tree/files/"
    return {p.removeprefix(prefix): what.split()[1] for p, what in entries.items()
            if p.startswith(prefix) and what.startswith("file ")}


def failure_report(server: ServerProcess, worker: WorkerProcess, output: str) -> str:
    return (f"--- bazel ---\n{output[-4000:]}\n--- server ---\n{server.log_tail()}\n"
            f"--- worker ---\n{worker.log_text()[-4000:]}")


def test_bazel_remote_execution_matches_a_local_build_and_fills_the_cache(
    sample_workspace: BazelWorkspace, local_build: LocalBuild, tmp_path: Path, worker_root: Path
) -> None:
    ws = sample_workspace
    workdir = tmp_path / "server"
    with (
        reapi_server_process(workdir, server_config(workdir)) as server,
        reapi_worker_process(worker_root, server.address, concurrency=2) as worker,
    ):
        # Every action runs sealed: bwrap, as the unprivileged action user, without a network
        # (Bazel's C++ toolchain is read from the read-only system).
        sandbox = next(line for line in worker.log_text().splitlines() if "sandbox: " in line)
        assert "sandbox: bwrap (pid, mount, ipc, uts and network" in sandbox, sandbox
        assert "actions run as reapi-action" in sandbox, sandbox
        flags = remote_execution_flags(server.url)
        ws.clean()
        first = ws.test("//...", flags=flags)
        summary = first.summary
        assert summary.actions == local_build.run.summary.actions, (summary, local_build.run.summary)
        assert summary.count(REMOTE) == summary.actions, f"not every action ran remotely: {summary}"
        for target in SAMPLE_TESTS:
            assert re.search(rf"^{re.escape(target)}\s+PASSED", first.output, re.MULTILINE), failure_report(
                server, worker, first.output)

        remote = ws.outputs()
        missing = [p for p in KEY_OUTPUTS if p not in remote.files()]
        assert not missing, f"outputs missing after the remote build: {missing}"
        differences = [d for d in local_build.outputs.diff(remote) if not d.startswith(f"{LISTING}:")]
        assert not differences, "\n".join(differences)
        assert listed_files(ws.bazel_bin / LISTING) == tree_files(remote.entries)
        assert remote.entries.get("tree/with_symlink/link_to_inner.txt") == "link -> nested/inner.txt"
        big_log = ws.testlogs / "sh" / "big_output_test" / "test.log"
        assert big_log.stat().st_size > BIG_OUTPUT_BYTES, "the >1 MB stdout did not come back whole"
        assert worker.log_text().count(": OK (ran") >= summary.actions

        failing = ws.test("//failing:failing_test", flags=flags, expect_exit=3)
        assert re.search(r"^//failing:failing_test\s+FAILED", failing.output, re.MULTILINE), failing.tail()
        log = (ws.testlogs / "failing" / "failing_test" / "test.log").read_text()
        assert "failing_test fails on purpose" in log
        assert failing.summary.count(REMOTE) == failing.summary.actions >= 1

        ws.clean()
        execution_log = tmp_path / "rebuild-spawns.json"
        again = ws.test("//...", flags=[*flags, f"--execution_log_json_file={execution_log}"])
        spawns = read_execution_log(execution_log)
        assert len(spawns) == summary.actions, (len(spawns), summary)
        broken, xml_duration_misses = cache_misses(spawns)
        assert not broken, "after clean, not from the cache:\n" + "\n".join(map(str, broken))
        assert again.summary.count(REMOTE_CACHE_HIT) == summary.actions - len(xml_duration_misses)
        assert not remote.diff(ws.outputs()), "the cached rebuild differs from the remote build"

        assert not server.problems(), "the server logged errors:\n" + "\n".join(server.problems())
        assert not worker.problems(), "the worker logged errors:\n" + "\n".join(worker.problems())
