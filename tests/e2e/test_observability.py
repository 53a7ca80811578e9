"""Issue 12 with the real Bazel 4.2.3: metrics move as a remote build runs, live logs
stay whole, and "why did this miss?" names what an edit changed.

A private copy of the sample workspace (this test edits it) builds //cc:all with
every action on a real reapi-worker process, against a real reapi-server process
serving its HTTP port. Then one source file and one compiler flag are edited and
the workspace rebuilt: the explanation of the recompiled greet.cc names the changed
input file and the changed argument.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import SAMPLE_WORKSPACE
from tests.support.bazel import BazelInstallation, fast_tmp_root, remote_execution_flags, remove_tree
from tests.support.metrics_scrape import Scrape, scrape
from tests.support.server_process import reapi_server_process, server_config
from tests.support.worker_process import reapi_worker_process

TARGETS = ("//cc:hello", "//cc:greet_test")


@pytest.fixture
def worker_root(tmp_path: Path) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="reapi-worker-", dir=fast_tmp_root()))
    try:
        yield root
    finally:
        if (root / "worker.log").exists():
            shutil.copy(root / "worker.log", tmp_path / "worker.log")
        remove_tree(root)


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.total(name, **labels) - before.total(name, **labels)


def test_metrics_logs_and_miss_explanations_over_a_real_bazel_build(
    bazel: BazelInstallation, bazel_session_root: Path, tmp_path: Path, worker_root: Path
) -> None:
    ws = bazel.workspace(SAMPLE_WORKSPACE, bazel_session_root / "observability")
    workdir = tmp_path / "server"
    config = server_config(workdir, server={"http_listen": "127.0.0.1:0"})
    with (
        reapi_server_process(workdir, config) as server,
        reapi_worker_process(worker_root, server.address, concurrency=2) as worker,
    ):
        http = server.console_url()
        flags = remote_execution_flags(server.url)
        ws.clean()
        start = scrape(f"{http}/metrics")
        ws.build(*TARGETS, flags=flags)
        built = scrape(f"{http}/metrics")
        executed = moved(start, built, "reapi_executions_total", outcome="ok")
        assert executed >= 4, built.text  # compiles and links, every one remote
        assert moved(start, built, "reapi_action_cache_lookups_total", result="miss") >= executed
        assert moved(start, built, "reapi_cas_bytes_total", direction="write") > 0
        assert moved(start, built, "reapi_cas_bytes_total", direction="read") > 0
        for stage in ("queued", "input_fetch", "execution", "output_upload"):
            assert moved(start, built, "reapi_execution_stage_duration_seconds_count", stage=stage) == executed
        assert moved(start, built, "reapi_rpc_duration_seconds_count", method="Execution/Execute", code="OK") >= executed

        ws.clean()
        ws.build(*TARGETS, flags=flags)
        cached = scrape(f"{http}/metrics")
        assert moved(built, cached, "reapi_action_cache_lookups_total", result="hit") >= executed
        assert moved(built, cached, "reapi_executions_total") == 0

        # One source and one flag edited: greet.cc recompiles, and says why.
        greet = ws.root / "cc" / "greet.cc"
        greet.write_text(greet.read_text().replace('"hello, "', '"hello there, "'))
        build_file = ws.root / "cc" / "BUILD"
        build_file.write_text(build_file.read_text().replace(
            'hdrs = ["greet.h"],', 'hdrs = ["greet.h"],\n    copts = ["-DGREETING_EDITION=2"],'))
        ws.build(*TARGETS, flags=flags)
        operations = get_json(f"{http}/api/operations?stage=completed")
        assert isinstance(operations, list)
        explanations = [get_json(f"{http}/api/explain/{quote(op['name'], safe='')}") for op in operations
                        if not op["cached"]]
        compiles = [e for e in explanations if isinstance(e, dict) and e.get("changes")
                    and any(c["path"] == "cc/greet.cc" for c in e["changes"]["inputs"])]
        assert compiles, json.dumps(explanations, indent=1)[-4000:]
        found = compiles[-1]
        # What Bazel 4.2.3 sends in RequestMetadata: its name (no version), the invocation,
        # the target, the mnemonic and the configuration.
        assert found["client"].startswith("bazel, invocation "), found["client"]
        assert found["client"].endswith(", target //cc:greet"), found["client"]
        assert found["matched_by"].startswith("the same target //cc:greet, mnemonic CppCompile, configuration "), found
        assert "greet.pic.o" in found["matched_by"] or "greet.o" in found["matched_by"]
        changed = [c for c in found["changes"]["inputs"] if c["change"] == "changed"]
        assert [c["path"] for c in changed] == ["cc/greet.cc"], found["changes"]["inputs"]
        assert any("added '-DGREETING_EDITION=2'" in line for line in found["changes"]["arguments"]), found

        assert "stopped after" not in worker.log_text(), "a live log lost its tail"
        assert "executed " in server.process.log_text()  # the per-execution INFO line
        assert not server.problems(), "\n".join(server.problems())
        assert not worker.problems(), "\n".join(worker.problems())
