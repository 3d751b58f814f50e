"""Headless Chromium for the browser tests: Debian's, driven by Playwright.

``make test`` installs ``/usr/bin/chromium`` when it is absent; Playwright's own
browser downloads are never used. Every page a test opens is watched for
script errors and Content-Security-Policy refusals (a test fails on any) and
photographed into ``tests/artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from tests.conftest import Node

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"
VIEWPORT = {"width": 1280, "height": 860}
BLANK = "/_test/blank"  # a page of the node's origin that loads only statebus.js


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing; `make test` installs it, or run "
            "`apt-get install -y --no-install-recommends chromium`"
        )


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class Pages:
    """Opens pages on nodes, logged in as their owner; checks them for script errors."""

    def __init__(self, browser: Browser, test_name: str) -> None:
        self.browser = browser
        self.name = re.sub(r"[^\w.-]+", "_", test_name)
        self.errors: list[str] = []
        self.pages: list[Page] = []
        self.shots: list[Path] = []
        self._contexts: list[BrowserContext] = []

    async def open(self, node: Node, path: str = "/", *, login: bool = True) -> Page:
        """A page of its own (own cookies) on ``node``, at ``path``."""
        context = await self.browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        self._contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{node.url}: {error}"))
        page.on("console", lambda message: self._console(node, message))
        self.pages.append(page)
        if login:
            await page.goto(f"{node.url}/_login?token={node.token}")
        await self.goto(page, node, path)
        return page

    def _console(self, node: Node, message: ConsoleMessage) -> None:
        """A page blocked by its Content-Security-Policy fails its test, like a script error."""
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"{node.url}: {message.text}")

    async def goto(self, page: Page, node: Node, path: str) -> None:
        if path == BLANK:
            await page.route(
                f"{node.url}{BLANK}",
                lambda route: route.fulfill(
                    content_type="text/html",
                    body='<!doctype html><meta charset="utf-8">'
                    '<script src="/_ui/statebus.js"></script>',
                ),
            )
        if page.url != f"{node.url}{path}":
            await page.goto(f"{node.url}{path}")

    async def screenshot(self, page: Page, label: str = "") -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}{'-' + label if label else ''}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    async def close(self) -> None:
        if not self.shots and self.pages:  # a test that failed early still leaves a picture
            await self.screenshot(self.pages[-1], "end")
        for context in self._contexts:
            await context.close()


@asynccontextmanager
async def pages_for(request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    async with chromium() as browser:
        pages = Pages(browser, request.node.name)
        try:
            yield pages
        finally:
            await pages.close()
        assert not pages.errors, f"script errors on the page: {pages.errors}"
