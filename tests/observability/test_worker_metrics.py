"""The worker's /metrics (--http-listen): actions by status, stage durations, the
bytes its cache fetched, cache size and slots."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.metrics_scrape import scrape
from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config, worker_in_process


async def test_worker_metrics_move_with_its_actions(tmp_path: Path) -> None:
    async with (running_server(execution_config()) as server, channel_to(server) as channel,
                worker_in_process(server, tmp_path / "worker", http_listen="127.0.0.1:0") as worker):
        assert worker.http is not None
        url = f"http://127.0.0.1:{worker.http.port}/metrics"
        before = await asyncio.to_thread(scrape, url)
        assert before.value("reapi_worker_slots") == 2
        client = ActionClient(channel)
        data = b"x" * 5000
        assert (await client.run(["cat", "in.txt"], {"in.txt": data})).result.exit_code == 0
        assert (await client.run(["false"])).result.exit_code == 1
        after = await asyncio.to_thread(scrape, url)
        assert after.value("reapi_worker_actions_total", status="ok") == 1
        assert after.value("reapi_worker_actions_total", status="exit_nonzero") == 1
        assert after.value("reapi_worker_input_bytes_fetched_total") >= len(data)
        assert after.value("reapi_worker_cache_bytes") >= len(data)
        for stage in ("input_fetch", "execution", "output_upload", "total"):
            assert after.value("reapi_worker_action_duration_seconds_count", stage=stage) == 2, stage
        assert after.value("reapi_worker_busy_slots") == 0

        # An output the worker adopts into its cache was not fetched.
        made = await client.run(["sh", "-c", "head -c 70000 /dev/urandom > out.bin"], outputs=["out.bin"])
        assert made.result.exit_code == 0 and made.result.output_files
        last = await asyncio.to_thread(scrape, url)
        assert last.value("reapi_worker_input_bytes_fetched_total") == after.value("reapi_worker_input_bytes_fetched_total")
        assert last.value("reapi_worker_cache_bytes") >= after.value("reapi_worker_cache_bytes")
