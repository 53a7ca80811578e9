"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by
selenium, for the web console's tests.

    async with headless_chromium(tmp_path) as browser:
        await browser.open(url)
        assert "Dashboard" in await browser.text("h1")
        await browser.screenshot("dashboard")

Every call runs on a thread: the server under test runs in the test's own event
loop and must keep serving while the browser waits for it. As root Chromium needs
--no-sandbox; the other flags keep it from reaching the network by itself, and each
browser gets a fresh profile directory. Screenshots go to ``shots_dir`` and, when
$REAPI_CONSOLE_SCREENSHOTS names a directory, there too (how docs/ gets its pictures).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000")
WAIT_S = 30.0


class BrowserMissing(RuntimeError):
    pass


def find_chromium() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        raise BrowserMissing("chromium and chromedriver are needed (deploy/bootstrap.sh --test installs Debian's "
                             "chromium and chromium-driver)")
    return browser, driver


class Browser:
    def __init__(self, driver: webdriver.Chrome, shots_dir: Path) -> None:
        self.driver = driver
        self.shots_dir = shots_dir

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def text(self, css: str) -> str:
        return await asyncio.to_thread(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def page_text(self) -> str:
        return await self.text("body")

    async def title(self) -> str:
        return await asyncio.to_thread(lambda: self.driver.title)

    async def wait_for_text(self, css: str, wanted: str, timeout: float = WAIT_S) -> str:
        """Wait until the element's text contains ``wanted``; return the text."""
        def contains(driver: webdriver.Chrome) -> str | bool:
            elements = driver.find_elements(By.CSS_SELECTOR, css)
            return elements[0].text if elements and wanted in elements[0].text else False

        return str(await asyncio.to_thread(lambda: WebDriverWait(self.driver, timeout).until(contains)))

    async def click_link(self, text: str) -> None:
        def click() -> None:
            self.driver.find_element(By.PARTIAL_LINK_TEXT, text).click()

        await asyncio.to_thread(click)

    async def click(self, css: str) -> None:
        """Click the first element ``css`` selects (a link: the next page loads)."""
        def click() -> None:
            self.driver.find_element(By.CSS_SELECTOR, css).click()

        await asyncio.to_thread(click)

    async def screenshot(self, name: str) -> Path:
        path = self.shots_dir / f"{name}.png"
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
        docs = os.environ.get("REAPI_CONSOLE_SCREENSHOTS")
        if docs:
            Path(docs).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(docs) / path.name)
        return path


@asynccontextmanager
async def headless_chromium(shots_dir: Path) -> AsyncIterator[Browser]:
    browser_path, driver_path = find_chromium()
    shots_dir.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="reapi-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=Service(executable_path=driver_path))
    try:
        yield Browser(driver, shots_dir)
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
