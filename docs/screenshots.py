"""Make the screenshots in docs/ from real nodes.

    PYTHONPATH=. .venv/bin/python docs/screenshots.py

Two nodes on 127.0.0.1 (Alice and Bob, data in a temporary directory); Bob
follows Alice when the nodes can peer (``POST /_peers``), and each writes a
little through the same pages a person would use.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright, expect

from statebus.runner import NodeServer
from statebus.settings import Settings

DOCS = Path(__file__).parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LIVE = 20_000


async def write(page: Page, text: str) -> None:
    await page.locator("#compose-text").fill(text)
    await page.get_by_role("button", name="post", exact=True).click()
    await expect(page.locator("#timeline .text", has_text=text).first).to_be_visible(timeout=LIVE)


async def profile(page: Page, name: str, bio: str) -> None:
    await page.locator("#profile-name").fill(name)
    await page.locator("#profile-bio").fill(bio)
    await page.get_by_role("button", name="save profile").click()
    await expect(page.locator("#profile-saved")).to_have_text("saved")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = [
            Settings(data_dir=Path(tmp) / name, port=0, app="apps.twitter_clone")
            for name in ("alice", "bob")
        ]
        async with (
            NodeServer(settings[0]) as alice,
            NodeServer(settings[1]) as bob,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=ARGS
            )
            pages = []
            for node in (alice, bob):
                context = await browser.new_context(viewport={"width": 1180, "height": 760})
                page = await context.new_page()
                await page.goto(f"{node.url}/_login?token={node.owner_token}")
                pages.append(page)
            page_a, page_b = pages
            await profile(page_a, "Alice", "Keeps her posts on her own machine.")
            await write(page_a, "My node, my posts: everything here lives in my own namespace.")
            await write(page_a, "Paste my share line into Follow and you get my posts live.")
            await profile(page_b, "Bob", "Follows Alice.")
            async with httpx.AsyncClient(base_url=bob.url) as http:
                peers = await http.get(
                    "/_peers", headers={"Authorization": f"Bearer {bob.owner_token}"}
                )
            if peers.is_success:
                share = await page_a.locator("#share-line").input_value()
                await page_b.locator("#follow-line").fill(share)
                await page_b.get_by_role("button", name="follow", exact=True).click()
                first = page_b.locator("#timeline > article", has_text="Paste my share line")
                await expect(first).to_be_visible(timeout=LIVE)
                await first.locator(":scope > .actions .reply-button").click()
                await first.locator(":scope > .reply-form textarea").fill("Done. Hello from Bob!")
                await first.locator(":scope > .reply-form button").click()
                await first.locator(":scope > .actions .like").click()
                await write(page_b, "Following Alice without anyone in the middle.")
                await expect(page_a.locator(".replies .text")).to_be_visible(timeout=LIVE)
            else:
                await write(page_b, "(federation not merged yet: no follow in this picture)")
            await page_a.screenshot(path=str(DOCS / "chirp.png"))
            await page_b.screenshot(path=str(DOCS / "chirp-bob.png"))
            keys = page_a
            await keys.goto(f"{alice.url}/profile")
            await expect(keys.locator("#key-value")).to_contain_text("Alice")
            await keys.screenshot(path=str(DOCS / "keys.png"))
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
