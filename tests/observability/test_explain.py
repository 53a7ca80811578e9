"""Why did this miss? Two executions of "the same thing" with one input file and
one argument changed; the explanation names both, over the console's JSON API.
RequestMetadata is read under both keys clients send."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.app import ReapiServer
from server.explain.diff import argument_changes
from server.request_metadata import KEYS, request_metadata
from tests.support.browser import headless_chromium
from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config, worker_in_process


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[tuple[ReapiServer, ActionClient]]:
    config = execution_config()
    config.http_listen = "127.0.0.1:0"
    async with (running_server(config) as server, channel_to(server) as channel,
                worker_in_process(server, tmp_path / "worker")):
        yield server, ActionClient(channel)


async def execute(client: ActionClient, argv: list[str], inputs: dict, metadata: tuple = ()) -> str:
    digest = await client.action(argv, inputs, outputs=["out/app.o"], do_not_cache=False)
    request = re_pb2.ExecuteRequest(action_digest=digest.to_proto())
    name = ""
    async for operation in client.execution.Execute(request, metadata=metadata):
        name = operation.name
    return name


def get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        return {"status": err.code, **json.loads(err.read())}


async def explanation(server: ReapiServer, operation: str) -> dict:
    assert server.http is not None
    return await asyncio.to_thread(get_json, f"{server.http.url}/api/explain/{quote(operation, safe='')}")


COMPILE = ["sh", "-c", "mkdir -p out; cat src/lib/app.c > out/app.o", "cc", "-DVERSION=1", "-O2"]


async def test_the_explanation_names_the_changed_input_file_and_argument(
        farm: tuple[ReapiServer, ActionClient], tmp_path: Path) -> None:
    server, client = farm
    tree = {"src": {"lib": {"app.c": b"int v = 1;\n", "app.h": b"#pragma once\n"}, "README": b"same"}}
    first = await execute(client, COMPILE, tree)
    assert (await explanation(server, first))["previous_action_digest"] is None

    changed_tree = {"src": {"lib": {"app.c": b"int v = 2;\n", "app.h": b"#pragma once\n"}, "README": b"same"}}
    changed_args = [a.replace("-DVERSION=1", "-DVERSION=2") for a in COMPILE]
    second = await execute(client, changed_args, changed_tree)
    found = await explanation(server, second)
    assert found["matched_by"] == "the same output paths: out/app.o"
    assert found["previous_action_digest"] is not None
    changes = found["changes"]
    assert changes["arguments"] == ["argument 4: '-DVERSION=1' -> '-DVERSION=2'"]
    assert [(c["path"], c["change"]) for c in changes["inputs"]] == [("src/lib/app.c", "changed")]
    assert changes["environment"] == [] and changes["platform"] == []

    async with headless_chromium(tmp_path / "screenshots") as browser:
        assert server.http is not None
        await browser.open(f"{server.http.url}/explain/{quote(second, safe='')}")
        page = await browser.page_text()
        assert "src/lib/app.c" in page and "-DVERSION=2" in page
        await browser.screenshot("explain")


async def test_the_target_in_request_metadata_is_the_key_under_either_header(
        farm: tuple[ReapiServer, ActionClient]) -> None:
    server, client = farm
    for key in KEYS:
        meta = re_pb2.RequestMetadata(target_id="//app:lib", action_mnemonic="CppCompile", configuration_id="k8",
                                      tool_details=re_pb2.ToolDetails(tool_name="pants", tool_version="2"))
        header = ((key, meta.SerializeToString()),)
        first = await execute(client, [*COMPILE, key], {"a.c": b"1"}, header)
        second = await execute(client, [*COMPILE, key], {"a.c": b"2"}, header)
        found = await explanation(server, second)
        assert found["matched_by"] == ("the same target //app:lib, mnemonic CppCompile, configuration k8 "
                                       "and output paths: out/app.o"), key
        assert [c["path"] for c in found["changes"]["inputs"]] == ["a.c"]
        assert first != second


async def test_without_the_same_target_the_output_paths_still_match(farm: tuple[ReapiServer, ActionClient]) -> None:
    """A flag that changes the configuration id still finds the earlier action by its outputs."""
    server, client = farm
    for configuration, data in (("cfg-1", b"1"), ("cfg-2", b"2")):
        meta = re_pb2.RequestMetadata(target_id="//t", action_mnemonic="M", configuration_id=configuration)
        name = await execute(client, COMPILE, {"a.c": data}, ((KEYS[0], meta.SerializeToString()),))
    found = await explanation(server, name)
    assert found["matched_by"] == "the same output paths: out/app.o"
    assert [c["path"] for c in found["changes"]["inputs"]] == ["a.c"]


def test_request_metadata_reads_both_keys_and_ignores_others() -> None:
    meta = re_pb2.RequestMetadata(tool_invocation_id="inv-1")
    for key in KEYS:
        parsed = request_metadata([("other-bin", b"x"), (key, meta.SerializeToString())])
        assert parsed is not None and parsed.tool_invocation_id == "inv-1"
    assert request_metadata([("x", "y")]) is None


def test_argument_changes_name_positions() -> None:
    assert argument_changes(["cc", "-O2", "a.c"], ["cc", "-O3", "a.c", "-g"]) == [
        "argument 1: '-O2' -> '-O3'", "argument 3: added '-g'"]
    assert argument_changes(["cc", "-c", "a.c"], ["cc", "a.c"]) == ["argument 1: removed '-c'"]
