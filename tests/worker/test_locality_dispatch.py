"""Locality dispatch with real worker processes: an action whose inputs one worker has
just fetched runs on that worker again; with ``dispatch = "fifo"`` it goes to the worker
that waited longest, whatever it holds."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from tests.support.servers import channel_to, running_server
from tests.support.worker_process import async_worker_process
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config

OK = grpc.StatusCode.OK.value[0]


@pytest.mark.parametrize("dispatch", ["locality", "fifo"])
async def test_a_repeat_action_runs_on_the_worker_holding_its_inputs(dispatch: str, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(execution_config(dispatch=dispatch)))
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
