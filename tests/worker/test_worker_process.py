"""reapi-worker as a real process: platform routing, a killed worker, SIGTERM, server restarts."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import grpc
import pytest

from server.app import ReapiServer
from tests.support.processes import free_port
from server.app import start_server
from tests.support.servers import channel_to, running_server
from tests.support.worker_process import async_worker_process
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config

OK = grpc.StatusCode.OK.value[0]


def observable(tmp_path: Path, extra: str = "") -> list[str]:
    """Worker arguments for tests that watch an action from outside (files it writes
    outside its exec root, the worker's pid as its parent): the process fallback, as root."""
    config = tmp_path / "observable.toml"
    config.write_text(f'[worker]\nsandbox = "process"\nrun_as = "root"\n{extra}')
    return ["--config", str(config)]


async def wait_for_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path} never appeared")


async def test_actions_go_only_to_workers_whose_platform_matches_and_survive_a_killed_worker(
    exec_server: ReapiServer, tmp_path: Path
) -> None:
    """Acceptance 3: an x86-64 and an arm-a64 worker; routing by ISA; failover after SIGKILL."""
    async with (
        async_worker_process(tmp_path / "x86", exec_server.address, bot_id="x86-worker",
                             extra_args=observable(tmp_path)) as x86,
        async_worker_process(tmp_path / "arm", exec_server.address, bot_id="arm-worker",
                             properties=["ISA=arm-a64"], extra_args=observable(tmp_path)) as arm,
        channel_to(exec_server) as channel,
    ):
        client = ActionClient(channel)
        for isa, expected in (("arm-a64", "arm-worker"), ("x86-64", "x86-worker")) * 3:
            response = await client.run(["true"], platform={"OSFamily": "linux", "ISA": isa}, salt=os.urandom(8))
            assert response.status.code == OK, response.status
            assert response.result.execution_metadata.worker == expected
        # Both match this one. Whichever takes it is killed mid-action; the other finishes it.
        marker_dir = tmp_path / "markers"
        marker_dir.mkdir()
        digest = await client.action(
            ["sh", "-c", f"echo $PPID > {marker_dir}/$PPID; sleep 2; echo finished"], salt=b"failover")
        execution = asyncio.create_task(client.execute(digest))
        deadline = time.monotonic() + 30
        while not os.listdir(marker_dir) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first_pid = int(os.listdir(marker_dir)[0])
        victim, survivor = (x86, arm) if first_pid == x86.pid else (arm, x86)
        assert first_pid == victim.pid
        await asyncio.to_thread(victim.kill)
        response = await asyncio.wait_for(execution, 60)
        assert response.status.code == OK, response.status
        assert response.result.execution_metadata.worker == survivor.bot_id
        assert await client.blob(response.result.stdout_digest) == b"finished\n"
        assert str(survivor.pid) in os.listdir(marker_dir)
        assert not survivor.problems(), survivor.problems()


async def test_sigterm_finishes_the_running_action_then_exits_cleanly(exec_server: ReapiServer, tmp_path: Path) -> None:
    async with (async_worker_process(tmp_path / "w", exec_server.address, extra_args=observable(tmp_path)) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        marker = tmp_path / "started"
        digest = await client.action(["sh", "-c", f"echo 1 > {marker}; sleep 1; echo done"], salt=b"sigterm")
        execution = asyncio.create_task(client.execute(digest))
        await wait_for_file(marker)
        worker.terminate()
        response = await asyncio.wait_for(execution, 30)
        assert response.status.code == OK and response.result.exit_code == 0
        assert await client.blob(response.result.stdout_digest) == b"done\n"
        assert await asyncio.to_thread(worker.wait, 30) == 0
        assert "1 actions" in worker.log_text() and not worker.problems()


async def test_a_worker_reconnects_after_the_server_restarts_and_keeps_its_cache(tmp_path: Path) -> None:
    config = execution_config()
    config.listen = f"127.0.0.1:{free_port()}"  # the restarted server comes back on the same port
    inputs = {"data.txt": b"cached input " * 100}

    async def run_once(server: ReapiServer) -> tuple[int, str]:
        async with channel_to(server) as channel:
            response = await ActionClient(channel).run(["cat", "data.txt"], inputs, salt=os.urandom(8))
            return response.result.exit_code, response.result.execution_metadata.worker

    first = await start_server(config)
    first_running = True
    try:
        async with async_worker_process(tmp_path / "w", first.address) as worker:
            assert await run_once(first) == (0, worker.bot_id)
            cached = [p for p in worker.cache_dir.rglob("*-*") if p.parent.parent.name == "sha256"]
            inodes = {p: p.stat().st_ino for p in cached}
            assert inodes
            await first.stop(grace=None)
            first_running = False
            await asyncio.sleep(1.0)  # the worker keeps retrying meanwhile
            assert worker.process.exit_code is None
            async with running_server(config) as second:
                assert await asyncio.wait_for(run_once(second), 60) == (0, worker.bot_id)
                assert await asyncio.to_thread(worker.process.stop) == 0
            # The inputs were served from the kept cache: same files, not fetched again.
            assert all(p.exists() and p.stat().st_ino == inode for p, inode in inodes.items())
            assert worker.log_text().count("created (bot id") == 2
            assert not worker.problems(), worker.problems()
    finally:
        if first_running:
            await first.stop(grace=None)


async def test_sigterm_hands_back_an_action_that_outlives_the_drain_timeout(exec_server: ReapiServer, tmp_path: Path) -> None:
    config = observable(tmp_path, "drain_timeout = 0.5\n")
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    async with (
        async_worker_process(tmp_path / "a", exec_server.address, bot_id="a", extra_args=config) as a,
        async_worker_process(tmp_path / "b", exec_server.address, bot_id="b", extra_args=config) as b,
        channel_to(exec_server) as channel,
    ):
        client = ActionClient(channel)
        digest = await client.action(["sh", "-c", f"echo > {marker_dir}/$PPID; sleep 2; echo finished"], salt=b"hand-back")
        execution = asyncio.create_task(client.execute(digest))
        while not os.listdir(marker_dir):
            await asyncio.sleep(0.05)
        leaving, staying = (a, b) if int(os.listdir(marker_dir)[0]) == a.pid else (b, a)
        leaving.terminate()
        assert await asyncio.to_thread(leaving.wait, 30) == 0
        assert "handed back" in leaving.log_text()
        response = await asyncio.wait_for(execution, 60)
        assert response.status.code == OK, response.status
        assert response.result.execution_metadata.worker == staying.bot_id


async def test_a_clean_stop_ends_the_bot_session_at_once(exec_server: ReapiServer, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12: SIGTERM says goodbye, so the server drops the worker now (its slots no
    longer count, its leases requeue) rather than when the session expires."""
    assert exec_server.execution is not None
    scheduler = exec_server.execution.scheduler
    caplog.set_level(logging.INFO, logger="reapi.scheduler")
    async with async_worker_process(tmp_path / "w", exec_server.address) as worker:
        assert [w.bot_id for w in scheduler.farm().workers] == [worker.bot_id]
        worker.terminate()
        assert await asyncio.to_thread(worker.wait, 30) == 0
        assert scheduler.farm().workers == (), "the session outlived the worker"
        assert f"bot {worker.bot_id} stopped" in caplog.text  # the goodbye, not an expiry
        assert "bot session" in worker.log_text() and "ends" in worker.log_text()
        assert not worker.problems(), worker.problems()
