"""Per-action limits and a full worker disk, with real worker processes: each exceeded
limit fails its action with RESOURCE_EXHAUSTED naming it, and the worker goes on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from server.app import ReapiServer
from tests.support.servers import channel_to
from tests.support.tmpfs_disk import tmpfs_disk
from tests.worker.actions import ActionClient
from tests.worker.sandboxing import reachable_dir, sandboxed_worker

OK = grpc.StatusCode.OK.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

LIMITS = 'memory_limit = "64MiB"\nmax_processes = 32\nmax_stdio_size = "512KiB"\nmax_output_size = "1MiB"\n'
MEMORY_HOG = ["python3", "-c", "x = bytearray(256 << 20); print(len(x))"]


@pytest.fixture
def reachable() -> Iterator[Path]:
    with reachable_dir() as path:
        yield path


@pytest.mark.parametrize("mode", ["bwrap", "process"])
async def test_every_limit_fails_its_action_with_a_status_naming_it(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address, LIMITS, concurrency=1) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        assert "memory 67108864 bytes by cgroup memory controller" in worker.log_text()
        cases = {
            "memory_limit = 64 MiB": dict(argv=MEMORY_HOG),
            "max_processes = 32": dict(argv=["sh", "-c", "for i in $(seq 64); do sleep 5 & done; wait"]),
            "max_stdio_size = 512 KiB": dict(argv=["head", "-c", "5000000", "/dev/zero"]),
            "max_output_size = 1 MiB (killed by SIGXFSZ)": dict(argv=["sh", "-c", "head -c 2000000 /dev/zero > big"],
                                                               outputs=["big"]),
            "outputs take 1.172 MiB, more than max_output_size": dict(
                argv=["sh", "-c", "head -c 614400 /dev/zero > a; head -c 614400 /dev/zero > b"], outputs=["a", "b"]),
        }
        for expected, kw in cases.items():
            response = await client.run(kw.pop("argv"), salt=expected.encode(), **kw)  # type: ignore[arg-type]
            assert response.status.code == RESOURCE_EXHAUSTED, (expected, response.status)
            assert expected in response.status.message, response.status.message
            assert not response.result.output_files
            if "stdio" in expected:  # cut at the cap, not lost
                assert len(await client.blob(response.result.stdout_digest)) == 512 << 10
        # Within the limits, in the same slot, all is well.
        response = await client.run(["python3", "-c", "x = bytearray(8 << 20); print(len(x))"], salt=b"fine")
        assert response.status.code == OK and response.result.exit_code == 0, response.status
        assert not worker.problems(), worker.problems()


async def test_without_a_memory_cgroup_rlimit_as_stands_in(
    exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    config = 'memory_limit = "64MiB"\ncgroups = false\n'
    async with (sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address, config) as worker,
                channel_to(exec_server) as channel):
        assert "memory is limited by RLIMIT_AS" in worker.log_text()
        response = await ActionClient(channel).run(MEMORY_HOG, salt=b"rlimit")
        # The allocation fails inside the action, which reports it in its own way.
        assert response.status.code == OK and response.result.exit_code != 0


@pytest.fixture
def small_disk(reachable: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs the worker keeps its cache and exec roots on."""
    with tmpfs_disk(reachable / "disk", "64m", mode="0711") as disk:
        yield disk


def deleted_files_held(pid: int) -> list[str]:
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            held.append(target)
    return held


@pytest.mark.parametrize("where", ["output", "tmp"])
async def test_an_action_that_fills_the_disk_fails_and_the_next_one_runs(
    where: str, exec_server: ReapiServer, tmp_path: Path, small_disk: Path
) -> None:
    fill = "head -c 100000000 /dev/zero > " + ("big" if where == "output" else "/tmp/big")
    async with (sandboxed_worker("bwrap", tmp_path, small_disk, exec_server.address, concurrency=1) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        response = await client.run(["sh", "-c", fill + "; echo exit $?"], outputs=["big"], salt=where.encode())
        assert response.status.code == RESOURCE_EXHAUSTED, response.status
        message = response.status.message
        assert f"the worker's disk filled up while the action ran: {small_disk}" in message, message
        assert "free of 64 MiB" in message and "the action's files there took 6" in message, message
        assert not deleted_files_held(worker.pid)
        assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize > 60 << 20  # all given back
        for attempt in range(3):
            after = await client.run(["sh", "-c", "echo still-works"], salt=f"after-{attempt}".encode())
            assert after.status.code == OK and after.result.exit_code == 0, after.status
            assert await client.blob(after.result.stdout_digest) == b"still-works\n"
