"""Issue 13, item 4: a real arm64 reapi-worker next to an x86-64 one, against one server.

The arm64 worker is the checkout's worker run by an arm64 Debian rootfs's Python
(tests/support/arm_rootfs.py); on an x86-64 host every instruction goes through
qemu-user. It is given no properties: it must detect ``ISA=arm-a64`` itself. Since
binfmt_misc lets the x86-64 worker run arm64 programs too, where an action ran is
read from ``execution_metadata.worker``, not from what it printed. Checked here:

- each worker reports its own ISA and none of the other's extensions (qemu-user shows
  the host's x86 /proc/cpuinfo to the arm64 worker); the arm64 one runs actions in
  the sandbox's process fallback, since bubblewrap cannot run under qemu-user;
- actions constrained by ISA land on the matching worker, and ``uname -m`` there says
  aarch64 / x86_64;
- a C program cross-compiled on the host with aarch64-linux-gnu-gcc runs on the arm64
  worker and reports, from inside, that it runs as aarch64;
- real Bazel 4.2.3 with ``--remote_default_exec_properties=ISA=arm-a64`` runs a
  genrule there.

The first run on a machine builds and caches the rootfs (about a minute: mmdebstrap
extracts it, the host's pip fetches arm64 wheels), hence the long timeout; every step has its own.
Needs root on an x86-64 host (binfmt_misc, mmdebstrap): ``make test`` installs the
packages; ``-m 'not arm'`` leaves these tests out on purpose.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.arm_host import ArmUnavailable
from tests.support.arm_rootfs import ArmRootfs, prepare_arm_rootfs
from tests.support.arm_worker import arm_worker_process
from tests.support.bazel import BazelInstallation, REPO_ROOT, remote_execution_flags
from tests.support.bazel_summary import REMOTE
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.worker_process import WorkerProcess, reapi_worker_process
from tests.worker.actions import ActionClient
from tests.worker.trees import Exe

pytestmark = [pytest.mark.arm, pytest.mark.timeout(2400)]

ARM_WORKSPACE = Path(__file__).resolve().parent / "arm_workspace"
OK = grpc.StatusCode.OK.value[0]
ARM = {"OSFamily": "linux", "ISA": "arm-a64"}
X86 = {"OSFamily": "linux", "ISA": "x86-64"}
# Prints what the kernel (or qemu-user) says it runs on, and what it was compiled for.
PROGRAM = r"""
#include <stdio.h>
#include <sys/utsname.h>
int main(void) {
    struct utsname u;
    if (uname(&u) != 0) return 1;
#if defined(__aarch64__)
    const char *built = "aarch64";
#else
    const char *built = "other";
#endif
    printf("running on %s, built for %s, %zu-bit pointers\n", u.machine, built, 8 * sizeof(void *));
    return 0;
}
"""
SERVING = re.compile(r"serving \S+ \(concurrency \d+; (.*)\)")


@dataclass
class Fleet:
    server: ServerProcess
    x86: WorkerProcess
    arm: WorkerProcess

    def problems(self) -> list[str]:
        return [f"{name}: {line}" for name, proc in (("server", self.server), ("x86", self.x86), ("arm", self.arm))
                for line in proc.problems()]


@pytest.fixture(scope="session")
def arm_rootfs() -> ArmRootfs:
    try:
        return prepare_arm_rootfs(REPO_ROOT)
    except ArmUnavailable as exc:
        pytest.fail(f"the arm64 worker cannot run on this machine: {exc}. `make test` installs what it needs "
                    "(as root on Debian); to leave these tests out on purpose, run pytest with -m 'not arm'",
                    pytrace=False)


@pytest.fixture(scope="module")
def fleet(arm_rootfs: ArmRootfs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One real server process, an x86-64 worker process and an arm64 one."""
    root = tmp_path_factory.mktemp("arm-fleet")
    with (
        reapi_server_process(root / "server", server_config(root / "server")) as server,
        reapi_worker_process(root / "x86", server.address, bot_id="x86-worker") as x86,
        arm_worker_process(arm_rootfs, root / "arm", server.address, bot_id="arm-worker") as arm,
    ):
        yield Fleet(server, x86, arm)


def offered_isa(worker: WorkerProcess) -> list[str]:
    """The ISA values the worker offers, from its start-up line."""
    match = SERVING.search(worker.log_text())
    assert match, worker.log_text()[-2000:]
    return [pair.split("=", 1)[1] for pair in match.group(1).split() if pair.startswith("ISA=")]


def cross_compile(tmp_path: Path) -> bytes:
    source = tmp_path / "machine.c"
    source.write_text(PROGRAM)
    binary = tmp_path / "machine"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary.read_bytes()


def test_each_worker_detects_its_own_isa_and_no_extension_of_the_other(fleet: Fleet) -> None:
    arm, x86 = offered_isa(fleet.arm), offered_isa(fleet.x86)
    assert arm[0] == "arm-a64" and "arm-neon" in arm, arm
    assert not [isa for isa in arm if isa.startswith("x86")], f"x86 extensions leaked into the arm64 worker: {arm}"
    assert x86[0] == "x86-64" and not [isa for isa in x86 if isa.startswith("arm")], x86
    # Bubblewrap cannot run under qemu-user: the emulated worker is told to use the process fallback.
    assert "sandbox: process fallback" in fleet.arm.log_text()


async def test_isa_constrained_actions_land_on_the_matching_worker(fleet: Fleet) -> None:
    async with grpc.aio.insecure_channel(fleet.server.address) as channel:
        client = ActionClient(channel)
        for platform, worker, machine in ((ARM, "arm-worker", b"aarch64\n"), (X86, "x86-worker", b"x86_64\n")) * 2:
            response = await client.run(["uname", "-m"], platform=platform, salt=os.urandom(8))
            assert response.status.code == OK, response.status
            assert response.result.exit_code == 0, await client.blob(response.result.stderr_digest)
            assert response.result.execution_metadata.worker == worker, (platform, worker)
            assert await client.blob(response.result.stdout_digest) == machine
    assert not fleet.problems(), "\n".join(fleet.problems())


async def test_a_cross_compiled_arm64_program_runs_on_the_arm_worker(fleet: Fleet, tmp_path: Path) -> None:
    program = cross_compile(tmp_path)
    assert program[:4] == b"\x7fELF" and program[18:20] == b"\xb7\x00", "not an aarch64 ELF file"  # e_machine 183
    async with grpc.aio.insecure_channel(fleet.server.address) as channel:
        client = ActionClient(channel)
        response = await client.run(["./machine"], {"machine": Exe(program)}, platform=ARM, salt=os.urandom(8))
        assert response.status.code == OK, response.status
        stdout = await client.blob(response.result.stdout_digest)
        assert response.result.exit_code == 0, (stdout, await client.blob(response.result.stderr_digest))
        assert response.result.execution_metadata.worker == "arm-worker"
        assert stdout == b"running on aarch64, built for aarch64, 64-bit pointers\n"
    assert not fleet.problems(), "\n".join(fleet.problems())


def test_bazel_runs_a_genrule_on_the_arm_worker(fleet: Fleet, bazel: BazelInstallation, tmp_path: Path) -> None:
    ws = bazel.workspace(ARM_WORKSPACE, tmp_path / "ws")
    ran_before = (fleet.arm.log_text().count(": OK (ran"), fleet.x86.log_text().count(": OK (ran"))
    flags = remote_execution_flags(fleet.server.url, exec_properties=("OSFamily=linux", "ISA=arm-a64"))
    run = ws.build("//:machine", flags=flags)
    assert run.summary.count(REMOTE) == run.summary.actions == 1, run.summary
    assert (ws.bazel_bin / "machine.txt").read_text() == "aarch64\n"
    ran_after = (fleet.arm.log_text().count(": OK (ran"), fleet.x86.log_text().count(": OK (ran"))
    assert ran_after == (ran_before[0] + 1, ran_before[1]), "the genrule did not run on the arm64 worker alone"
    assert not fleet.problems(), "\n".join(fleet.problems())
