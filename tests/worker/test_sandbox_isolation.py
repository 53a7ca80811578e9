"""Sealed actions with real worker processes: the mode each worker says it runs, inputs
no action can change, nothing left behind, network off unless asked for."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from server.app import ReapiServer
from tests.support.servers import channel_to
from tests.support.worker_process import start_worker
from tests.worker.actions import ActionClient
from tests.worker.sandboxing import (
    processes_mentioning, processes_with, reachable_dir, sandboxed_worker, token, wait_until, worker_setup,
)

OK = grpc.StatusCode.OK.value[0]


@pytest.fixture
def reachable() -> Iterator[Path]:
    with reachable_dir() as path:
        yield path


async def test_each_worker_says_which_sandbox_it_runs_and_what_is_weaker(
    exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    async with sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address) as worker:
        line = next(line for line in worker.log_text().splitlines() if "sandbox:" in line)
        assert "sandbox: bwrap (pid, mount, ipc, uts and network" in line
        assert "actions run as reapi-action" in line and "inputs: links" in line
    async with sandboxed_worker("bwrap-setpriv", tmp_path, reachable, exec_server.address) as worker:
        assert "cannot enter" in worker.log_text() and "setpriv switches users" in worker.log_text()
    async with sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address, name="no-bwrap",
                                config='bwrap = "/nonexistent/bwrap"\n', bot_id="no-bwrap") as worker:
        log = worker.log_text()
        assert "sandbox: process fallback ('/nonexistent/bwrap' is not installed" in log
        assert "WARNING" in log and "the network is not isolated" in log
    # Asked for bwrap where there is none: the worker refuses to start (exit 2).
    config = tmp_path / "strict.toml"
    config.write_text('[worker]\nsandbox = "bwrap"\nbwrap = "/nonexistent/bwrap"\n')
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(start_worker, tmp_path / "strict", exec_server.address,
                                extra_args=["--config", str(config)])
    assert "configuration error: sandbox = \"bwrap\" but '/nonexistent/bwrap' is not installed" in (
        tmp_path / "strict" / "worker.log").read_text()


POISON = ["sh", "-c", "chmod u+w data.txt 2>/dev/null; chmod 666 data.txt 2>/dev/null; "
                      "echo poisoned > data.txt 2>/dev/null; cat data.txt"]


@pytest.mark.parametrize("mode", ["bwrap", "bwrap-setpriv", "process", "process-root"])
async def test_an_action_cannot_change_what_later_actions_read(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    inputs = {"data.txt": b"original"}
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address, concurrency=1) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        first = await client.run(POISON, inputs, salt=b"poison")
        assert first.status.code == OK, first.status
        later = await client.run(["cat", "data.txt"], inputs, salt=b"read")
        assert await client.blob(later.result.stdout_digest) == b"original"
        cached = [p for p in worker.cache_dir.rglob("*-8") if p.is_file()]
        assert cached and all(p.read_bytes() == b"original" for p in cached)
        if mode == "process-root":
            # Root can write anything, so it got a copy: it changed that copy and read it back.
            assert await client.blob(first.result.stdout_digest) == b"poisoned\n"
        else:
            assert await client.blob(first.result.stdout_digest) == b"original"


@pytest.mark.parametrize("mode", ["bwrap", "process", "process-nocgroup"])
async def test_background_and_double_forked_processes_die_with_their_action(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    background, escaped = token(), token()
    argv = ["sh", "-c", f"sleep {background} & (setsid sleep {escaped} > /dev/null 2>&1 &); echo hi"]
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address) as worker,
                channel_to(exec_server) as channel):
        response = await ActionClient(channel).run(argv, salt=mode.encode())
        assert response.status.code == OK and response.result.exit_code == 0
        await wait_until(lambda: not processes_with(background) and not processes_with(escaped),
                         what="the action's background processes to die")
        assert not worker.problems(), worker.problems()


@pytest.mark.parametrize("mode", ["bwrap", "process"])
async def test_a_killed_worker_leaves_no_process_and_the_retry_completes_once(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    background, main = token(), token()
    argv = ["sh", "-c", f"sleep {background} & sleep {main.replace('300.', '2.')}; echo done"]
    async with channel_to(exec_server) as channel:
        client = ActionClient(channel)
        digest = await client.action(argv, salt=mode.encode())
        # Started and killed by hand: stopping it would also clear what it left.
        workdir, extra = worker_setup(mode, tmp_path, reachable)
        first = await asyncio.to_thread(start_worker, workdir, exec_server.address, bot_id="first", extra_args=extra)
        execution = asyncio.create_task(client.execute(digest))
        await wait_until(lambda: processes_with(background), what="the action to start")
        first_life = set(processes_with(background))
        await asyncio.to_thread(first.kill)

        def survivors() -> set[int]:  # the retry runs the same command: only the first life's count
            return first_life & set(processes_with(background))

        if mode == "bwrap":  # the kernel kills the sandbox with its worker, and those it kept ready
            await wait_until(lambda: not survivors(), what="the sandbox to die with the worker")
            await wait_until(lambda: not processes_mentioning(str(workdir / "work")),
                             what="the sandboxes kept ready to die with the worker")
        else:  # the direct child died with the worker (--pdeathsig); its background process did not
            assert survivors()
        # The same worker restarted: leftovers of its previous life go before it takes work.
        previous_life = {name for name in os.listdir(workdir / "work") if not name.startswith(".")}
        assert previous_life
        async with sandboxed_worker(mode, tmp_path, reachable, exec_server.address, bot_id="first") as again:
            assert not survivors()
            leftovers = previous_life & set(os.listdir(workdir / "work"))
            response = await asyncio.wait_for(execution, 60)
            assert response.status.code == OK, response.status
            assert await client.blob(response.result.stdout_digest) == b"done\n"
            if mode == "process":  # found in the cgroup of its previous life
                assert "leftover processes of this worker's previous run (cgroup" in again.log_text()
            assert not leftovers  # exec roots and temp files of the first life are gone
        # Both lives log to one file: the action completed once, in the second.
        assert again.log_text().count(": OK (ran") == 1
        assert not processes_mentioning(str(workdir / "work"))  # a clean stop leaves nothing either


async def test_the_network_is_off_unless_the_action_asks_for_it(
    exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    async with (sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        seen = {}
        for network in ("off", "on", None):
            platform = {"OSFamily": "linux", **({"network": network} if network else {})}
            response = await client.run(["cat", "/proc/net/dev"], platform=platform, salt=str(network).encode())
            assert response.status.code == OK, response.status
            lines = (await client.blob(response.result.stdout_digest)).decode().splitlines()[2:]
            seen[network] = {line.split(":")[0].strip() for line in lines}
        assert seen["off"] == seen[None] == {"lo"}
        assert seen["on"] == host
        assert "network=off network=on" in worker.log_text()  # what the worker offers


@pytest.mark.parametrize("mode", ["bwrap", "bwrap-setpriv", "process"])
async def test_actions_run_as_the_action_user_with_no_privilege_left(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    """The command itself (no shell in between, which might drop privileges of its own)."""
    import pwd
    user = pwd.getpwnam("reapi-action")
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address) as worker,
                channel_to(exec_server) as channel):
        response = await ActionClient(channel).run(["cat", "/proc/self/status"], salt=mode.encode())
        assert response.status.code == OK, response.status
        status = dict(line.split(":", 1) for line in
                      (await ActionClient(channel).blob(response.result.stdout_digest)).decode().splitlines())
        assert status["Uid"].split() == [str(user.pw_uid)] * 4
        assert status["Gid"].split() == [str(user.pw_gid)] * 4
        assert set(status["Groups"].split()) <= {str(user.pw_gid)}  # its own group at most
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        assert not worker.problems(), worker.problems()
