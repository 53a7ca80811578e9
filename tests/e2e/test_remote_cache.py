"""Issue 2, item 3: real Bazel uses reapi as its remote cache.

Bazel 4.2.3 builds and tests the sample workspace (genrules, cc_library,
cc_binary, cc_test, sh_tests, an output directory) with ``--remote_cache`` against
a real ``reapi-server`` process. After ``bazel clean`` the rebuild must take every
action from the remote cache, and its outputs must be byte-identical to a build
with no remote at all. The one action allowed to miss is Bazel's test.xml
generation, whose key holds the test's duration (tests/support/bazel_execlog.py);
the execution log shows which spawns missed. The same holds with ``--remote_instance_name``; there the
server serves only that instance name, so a client that dropped or mangled it in
any resource name would get errors and cache misses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import SAMPLE_TESTS, LocalBuild
from tests.support.bazel import BazelRun, BazelWorkspace, remote_cache_flags
from tests.support.bazel_execlog import cache_misses, read_execution_log
from tests.support.bazel_summary import REMOTE_CACHE_HIT
from tests.support.server_process import reapi_server_process, server_config

# Outputs the comparison must include, so an empty or partial snapshot cannot pass.
KEY_OUTPUTS = (
    "gen/greeting.txt",
    "gen/shout.txt",
    "gen/pair/first.txt",
    "gen/pair/second.bin",
    "cc/libgreet.a",
    "cc/hello",
    "cc/greet_test",
    "tree/files/top.txt",
    "tree/files/nested/inner.txt",
    "tree/files/nested/deeper/numbers.txt",
    "tree/files/nested/empty.txt",
    "tree/listing.txt",
)
BIG_OUTPUT_BYTES = 1_500_000


def warnings_of(run: BazelRun) -> str:
    return "\n".join(run.warnings()) or "(none)"


def remote_warnings(run: BazelRun) -> list[str]:
    """Bazel only warns when a cache read or upload fails, and carries on locally."""
    return [w for w in run.warnings() if "remote" in w.lower()]


@pytest.mark.parametrize("instance_name", ["", "some/instance"], ids=["default-instance", "named-instance"])
def test_rebuild_after_clean_takes_every_action_from_the_remote_cache(
    instance_name: str, sample_workspace: BazelWorkspace, local_build: LocalBuild, tmp_path: Path
) -> None:
    ws = sample_workspace
    workdir = tmp_path / "server"
    # "" gets the zero-config wildcard; a named instance is the only name served.
    instances = [{"name": instance_name or "*", "cas": "cas", "ac": "ac"}]
    with reapi_server_process(workdir, server_config(workdir, instances=instances)) as server:
        flags = remote_cache_flags(server.url, instance_name)

        ws.clean()
        first = ws.test("//...", flags=flags)
        assert not remote_warnings(first), "uploading to the cache failed:\n" + "\n".join(remote_warnings(first))
        assert first.summary.count(REMOTE_CACHE_HIT) == 0, f"a fresh cache cannot hit: {first.summary}"
        assert first.summary.actions == local_build.run.summary.actions, (first.summary, local_build.run.summary)

        ws.clean()
        execution_log = tmp_path / "rebuild-spawns.json"
        second = ws.test("//...", flags=[*flags, f"--execution_log_json_file={execution_log}"])
        spawns = read_execution_log(execution_log)
        assert len(spawns) == first.summary.actions, (len(spawns), first.summary)
        broken, xml_duration_misses = cache_misses(spawns)
        assert not broken, (
            "after clean, these actions did not come from the cache:\n" + "\n".join(map(str, broken)) + "\n"
            f"upload run's warnings:\n{warnings_of(first)}\nrebuild's warnings:\n{warnings_of(second)}\n"
            f"server log:\n{server.log_tail()}"
        )
        assert second.summary.count(REMOTE_CACHE_HIT) == first.summary.actions - len(xml_duration_misses)
        assert not remote_warnings(second), "reading the cache failed:\n" + "\n".join(remote_warnings(second))
        for target in SAMPLE_TESTS:
            assert re.search(rf"^{re.escape(target)}\s+\(cached\) PASSED", second.output, re.MULTILINE), (
                f"{target} did not pass from the cache:\n{second.tail()}"
            )

        cached = ws.outputs()
        missing = [p for p in KEY_OUTPUTS if p not in cached.files()]
        assert not missing, f"outputs missing after the cached rebuild: {missing}"
        assert not local_build.outputs.diff(cached), "\n".join(local_build.outputs.diff(cached))
        assert cached.entries.get("tree/with_symlink/link_to_inner.txt") == "link -> nested/inner.txt"
        big_log = ws.testlogs / "sh" / "big_output_test" / "test.log"
        assert big_log.stat().st_size > BIG_OUTPUT_BYTES, "the >1 MB test log did not come back whole"

        assert not server.problems(), "the server logged errors:\n" + "\n".join(server.problems())
