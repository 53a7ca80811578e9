"""A real worker process that is alive but stuck on an action (its session stays alive):
the server ends the action DEADLINE_EXCEEDED after its timeout plus ``timeout_grace``
and the worker, told to cancel the lease, kills what it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config
from tests.worker.sandboxing import processes_with, reachable_dir, sandboxed_worker, token, wait_until

DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_a_stuck_worker_s_action_ends_deadline_exceeded_and_is_killed(tmp_path: Path) -> None:
    pause = token()
    # It ignores SIGTERM and keeps starting new sleeps; the worker waits kill_grace (an hour)
    # before SIGKILL: stuck on this lease, while its session loop keeps calling.
    argv = ["sh", "-c", f"trap '' TERM; while :; do sleep {pause.replace('300.', '0.2')}; done"]
    async with running_server(execution_config(timeout_grace=1, tick_interval=0.1)) as server:
        with reachable_dir() as reachable:
            async with (sandboxed_worker("bwrap", tmp_path, reachable, server.address, "kill_grace = 3600\n") as worker,
                        channel_to(server) as channel):
                response = await asyncio.wait_for(ActionClient(channel).run(argv, timeout=1), 60)
                assert response.status.code == DEADLINE_EXCEEDED, response.status
                assert f"on worker {worker.bot_id}, past its timeout (1s)" in response.status.message
                await wait_until(lambda: not processes_with(pause.replace("300.", "0.2")),
                                 what="the worker to kill the cancelled action")
                await wait_until(lambda: "cancelled by the server" in worker.log_text(), what="the cancellation")
