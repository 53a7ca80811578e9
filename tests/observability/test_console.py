"""Issue 12, acceptance 1 and 4: the web console in a real headless Chromium.

An in-process server with its HTTP port and a real worker run actions; the browser
opens every page (dashboard, operations, an operation, the CAS browser, the action
cache, workers), finds what each must show, and saves a screenshot of each. The
live tail shows an action's first line while the action still runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from cas.digest import Digest
from server.app import ReapiServer
from tests.support.browser import Browser, BrowserMissing, headless_chromium
from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient, metadata_of
from tests.worker.conftest import execution_config, worker_in_process


@dataclass
class Console:
    server: ReapiServer
    client: ActionClient
    browser: Browser
    bot_id: str

    @property
    def url(self) -> str:
        assert self.server.http is not None
        return self.server.http.url


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    config = execution_config()
    config.http_listen = "127.0.0.1:0"
    try:
        browser_cm = headless_chromium(tmp_path / "screenshots")
        browser = await browser_cm.__aenter__()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        async with (running_server(config) as server, channel_to(server) as channel,
                    worker_in_process(server, tmp_path / "worker") as worker):
            yield Console(server, ActionClient(channel), browser, worker.daemon.settings.bot_id)
    finally:
        await browser_cm.__aexit__(None, None, None)


def op_url(console: Console, name: str) -> str:
    return f"{console.url}/operation/{quote(name, safe='')}"


async def test_every_page_renders_what_it_must_show(console: Console) -> None:
    client, browser = console.client, console.browser
    action = await client.action(
        ["sh", "-c", "echo hello from the console test; mkdir -p out; echo data > out/result.txt"],
        {"src": {"input.txt": b"an input file\n"}}, outputs=["out/result.txt"], env={"GREETING": "hi"},
        do_not_cache=False)
    last = None
    async for operation in client.stream(action):
        last = operation
    assert last is not None and last.done
    name = last.name

    await browser.open(console.url + "/")
    page = await browser.page_text()
    assert "Queue depth per platform" in page and console.bot_id in page and "Last minutes" in page
    await browser.screenshot("dashboard")

    await browser.open(console.url + "/operations")
    assert name in await browser.page_text()
    await browser.open(console.url + "/operations?stage=queued")
    assert name not in await browser.page_text()
    await browser.open(console.url + "/operations?stage=completed")
    await browser.screenshot("operations")
    assert name in await browser.page_text()

    await browser.open(op_url(console, name))
    page = await browser.page_text()
    for wanted in ("echo hello from the console test", "GREETING", "OSFamily", "input fetch", "execution",
                   "output upload", "hello from the console test", "out/result.txt", console.bot_id, "exit 0"):
        assert wanted in page, f"{wanted!r} is not on the operation page:\n{page}"
    await browser.screenshot("operation")

    await browser.click('a[href^="/cas/file/"]')  # the output file
    assert "data" in await browser.text("pre")
    await browser.open(op_url(console, name))
    await browser.click('a[href^="/cas/action/"]')  # the Action, from the summary
    page = await browser.page_text()
    assert "input root" in page and "GREETING" in page
    await browser.click('a[href^="/cas/directory/"]')  # the input root
    assert "src/" in await browser.page_text()
    await browser.click_link("src/")
    page = await browser.page_text()
    assert "input.txt" in page
    await browser.screenshot("cas-directory")

    await browser.open(f"{console.url}/ac?action={action.hash}/{action.size_bytes}")
    page = await browser.page_text()
    assert "exit code 0" in page and "out/result.txt" in page
    await browser.screenshot("action-cache")

    await browser.open(console.url + "/workers")
    page = await browser.page_text()
    assert console.bot_id in page and "OSFamily" in page
    await browser.screenshot("workers")


async def test_the_live_tail_shows_lines_before_the_action_ends(console: Console) -> None:
    client, browser = console.client, console.browser
    action = await client.action(["sh", "-c", "echo first live line; echo to stderr >&2; sleep 120"])
    stream = client.stream(action)
    name = ""
    async for operation in stream:
        name = operation.name
        if metadata_of(operation).stage == 3:  # EXECUTING
            break
    await browser.open(op_url(console, name))
    text = await browser.wait_for_text("#stdout", "first live line")
    assert "first live line" in text
    await browser.wait_for_text("#stderr", "to stderr")
    execution = console.server.execution
    assert execution is not None
    state = await execution.scheduler.get(name)
    assert not state.done, "the action ended before the tail was seen: this test proves nothing"
    await browser.screenshot("operation-live")
    await browser.open(console.url + "/")  # the dashboard with an action running
    assert "1 / 2" in await browser.page_text()
    await browser.screenshot("dashboard-busy")
    await execution.scheduler.cancel(name)
    stream.cancel()  # type: ignore[attr-defined]


async def test_bad_urls_are_error_pages_not_tracebacks(console: Console) -> None:
    browser = console.browser
    await browser.open(f"{console.url}/operation/operations/nope")
    assert "unknown" in await browser.page_text()
    await browser.open(f"{console.url}/cas/directory/{'0' * 64}/12")
    assert "not in the CAS" in await browser.page_text()
    await browser.open(f"{console.url}/cas/file/nothex/12")
    assert "Cannot show this" in await browser.page_text()
    digest = Digest.of(b"")
    await browser.open(f"{console.url}/ac?action={digest.hash}/0")
    assert "a miss" in await browser.page_text()
