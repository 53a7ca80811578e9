"""The Bazel harness's own parts, checked without running Bazel.

The end-to-end verdicts rest on these: a misread summary line or a snapshot that
missed a file would let a broken cache pass. The server process helper is checked
here too, since the remote execution and downloader tests will start theirs with it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.support import toml_writer
from tests.support.bazel import BazelRun
from tests.support.bazel_outputs import snapshot_tree
from tests.support.bazel_summary import ProcessSummary
from tests.support.server_process import reapi_server_process


def test_summary_of_a_local_build() -> None:
    output = "INFO: Elapsed time: 6.7s\nINFO: 38 processes: 13 internal, 25 linux-sandbox.\nINFO: Build completed"
    summary = ProcessSummary.parse(output)
    assert (summary.total, summary.actions) == (38, 25)
    assert summary.not_cache_hits == {"linux-sandbox": 25}
    assert not summary.all_remote_cache_hits


def test_summary_of_a_fully_cached_build() -> None:
    summary = ProcessSummary.parse("INFO: 38 processes: 25 remote cache hit, 13 internal.\n")
    assert summary.count("remote cache hit") == 25
    assert summary.all_remote_cache_hits


def test_summary_with_a_partial_hit_is_not_all_hits() -> None:
    summary = ProcessSummary.parse("INFO: 9 processes: 2 remote cache hit, 3 internal, 4 remote.")
    assert summary.not_cache_hits == {"remote": 4}
    assert not summary.all_remote_cache_hits


@pytest.mark.parametrize("line", ["INFO: 0 processes.", "INFO: 1 process: 1 internal."])
def test_summary_without_real_actions_is_not_all_hits(line: str) -> None:
    summary = ProcessSummary.parse(line)
    assert summary.actions == 0
    assert not summary.all_remote_cache_hits


def test_summary_uses_the_last_line_and_rejects_garbage() -> None:
    output = "INFO: 2 processes: 2 internal.\nINFO: 5 processes: 5 remote cache hit.\n"
    assert ProcessSummary.parse(output).count("remote cache hit") == 5
    with pytest.raises(ValueError, match="no 'INFO"):
        ProcessSummary.parse("Build completed successfully")
    with pytest.raises(ValueError, match="do not add up"):
        ProcessSummary.parse("INFO: 7 processes: 2 internal, 3 linux-sandbox.")


def test_warnings_keep_the_cause_from_the_next_line() -> None:
    run = BazelRun([], 0, "WARNING: Writing to Remote Cache:\njava.io.IOException: UNIMPLEMENTED\n\tat x\n"
                          "WARNING: Writing to Remote Cache:\njava.io.IOException: UNIMPLEMENTED\n")
    assert run.warnings() == ["WARNING: Writing to Remote Cache: java.io.IOException: UNIMPLEMENTED"]


def _tree(root: Path) -> Path:
    (root / "dir/nested").mkdir(parents=True)
    (root / "dir/nested/a.txt").write_bytes(b"a")
    (root / "dir/empty").mkdir()
    (root / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "tool").chmod(0o755)
    os.symlink("nested/a.txt", root / "dir/link")
    os.symlink("/absolute/elsewhere", root / "abs_link")
    (root / "x.runfiles").mkdir()
    (root / "x.runfiles/ignored").write_bytes(b"runfiles are local")
    return root


def test_snapshot_sees_contents_modes_links_and_empty_dirs(tmp_path: Path) -> None:
    snap = snapshot_tree(_tree(tmp_path / "a"))
    assert set(snap.entries) == {"dir/nested/a.txt", "dir/empty", "tool", "dir/link"}
    assert snap.entries["dir/link"] == "link -> nested/a.txt"
    assert snap.entries["tool"].endswith(" x")
    assert snap.entries["dir/empty"] == "dir"


def test_snapshot_diff_finds_a_changed_byte_and_a_missing_file(tmp_path: Path) -> None:
    a = snapshot_tree(_tree(tmp_path / "a"))
    b_root = _tree(tmp_path / "b")
    assert not a.diff(snapshot_tree(b_root))
    (b_root / "dir/nested/a.txt").write_bytes(b"b")
    (b_root / "tool").unlink()
    diff = a.diff(snapshot_tree(b_root))
    assert len(diff) == 2
    assert any(line.startswith("dir/nested/a.txt:") for line in diff)
    assert any(line.startswith("tool:") and "(absent)" in line for line in diff)


def test_toml_writer_round_trips_a_server_config() -> None:
    config = {
        "server": {"listen": "127.0.0.1:0", "max_batch_total_size_bytes": "4MiB"},
        "stores": {"cas-disk": {"type": "disk", "path": "/tmp/x \"quoted\""}, "cas": {"type": "verify", "inner": "cas-disk"}},
        "instances": [{"name": "some/instance", "cas": "cas", "ac": "cas", "ac_update_enabled": False}],
        "worker": {"platform": ["OSFamily=linux", "ISA=x86-64"], "cores": 2, "ratio": 0.5},
    }
    assert tomllib.loads(toml_writer.dumps(config)) == config


def test_toml_writer_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="stores.x"):
        toml_writer.dumps({"stores": {"x": object()}})


def test_server_process_serves_real_grpc_and_stops_cleanly(tmp_path: Path) -> None:
    with reapi_server_process(tmp_path / "srv") as server:
        assert server.url.startswith("grpc://127.0.0.1:") and not server.url.endswith(":0")
        with grpc.insecure_channel(server.address) as channel:
            caps = re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest(), timeout=10)
        assert caps.cache_capabilities.digest_functions
        process = server.process
    assert process.exit_code == 0, process.log_tail()
    assert (tmp_path / "srv" / "data").is_dir(), "the default stores belong under the work dir"


def test_server_process_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    bad = {"server": {"listen": "127.0.0.1:0"}, "stores": {"cas": {"type": "no-such-store"}},
           "instances": [{"name": "*", "cas": "cas", "ac": "cas"}]}
    with pytest.raises(RuntimeError, match="exited with 2 before it was ready(.|\n)*no-such-store"):
        with reapi_server_process(tmp_path / "srv", bad):
            pass
