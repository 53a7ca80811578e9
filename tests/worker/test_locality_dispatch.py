"""Locality dispatch with real worker processes: an action whose inputs one worker has
just fetched runs on that worker again; with ``dispatch = "fifo"`` it goes to the worker
that waited longest, whatever it holds. With either scheduler state."""

from __future__ import annotations

import os
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from tests.support.servers import channel_to, running_server
from tests.support.worker_process import async_worker_process
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config

OK = grpc.StatusCode.OK.value[0]


@pytest.mark.parametrize(("dispatch", "state"), [("locality", "memory"), ("fifo", "memory"), ("locality", "redis")])
async def test_a_repeat_action_runs_on_the_worker_holding_its_inputs(
    dispatch: str, state: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    section: dict[str, object] = {"dispatch": dispatch}
    if state == "redis":  # the scheduler state in a real redis-server, under a prefix of this test's own
        section.update(state="redis", redis_url=request.getfixturevalue("redis_url"),
                       redis_key_prefix=f"test:{uuid.uuid4().hex}:")
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(execution_config(**section)))
        for name in ("a", "b"):
            await stack.enter_async_context(
                async_worker_process(tmp_path / name, server.address, bot_id=name, concurrency=1))
        client = ActionClient(await stack.enter_async_context(channel_to(server)))
        placements = []
        for round_number in range(3):
            inputs = {"lib": {f"h{i}.h": os.urandom(64 << 10) for i in range(3)}}
            first = await client.run(["cat", "lib/h0.h"], inputs, salt=f"first {round_number}".encode())
            again = await client.run(["cat", "lib/h1.h"], inputs, salt=f"again {round_number}".encode())
            assert first.status.code == OK and again.status.code == OK
            placements.append((first.result.execution_metadata.worker, again.result.execution_metadata.worker))
        if dispatch == "locality":
            assert all(one == two for one, two in placements), placements
        else:  # the other worker waited longer
            assert all(one != two for one, two in placements), placements
