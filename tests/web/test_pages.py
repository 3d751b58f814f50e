"""The node's pages: content negotiation, static files, and the key browser."""

from __future__ import annotations

import json
import shutil

import anyio
import httpx
from playwright.async_api import expect

from tests.apps.peers import add_peer, publish, share_line
from tests.browser import Pages
from tests.conftest import Node, NodeFactory

JSON = {"Accept": "application/json"}
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)


async def test_browsers_get_pages_and_other_clients_get_data(
    node: Node, client: httpx.AsyncClient
) -> None:
    await client.put("/profile", json={"name": "Ada"})
    visitor = node.client(owner=False)
    async with visitor:
        for path in ("/", "/profile", "/posts/", "/~" + node.node_id + "/profile"):
            page = await visitor.get(path, headers={"Accept": BROWSER_ACCEPT})
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert "/_ui/browser.js" in page.text  # no app configured: the key browser
            assert page.headers["vary"] == "Accept"
            assert "script-src 'self'" in page.headers["content-security-policy"]
        private = await visitor.get("/profile", headers={"Accept": "application/json"})
        assert private.status_code == 404  # private by default: as if it did not exist
    data = await client.get("/profile", headers={"Accept": "application/json"})
    assert data.json() == {"name": "Ada"}
    binary = await client.get("/profile", headers={"Accept": "application/octet-stream"})
    assert binary.headers["content-type"] == "application/octet-stream"
    async with client.stream("GET", "/profile", headers={"Accept": "*/*"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
    # A favicon or <img> request is refused rather than held open as a stream.
    icon = await client.get("/favicon.ico", headers={"Accept": "image/avif,image/*,*/*;q=0.8"})
    assert icon.status_code == 406


async def test_static_files_are_the_pages_only(node: Node) -> None:
    async with node.client(owner=False) as visitor:
        script = await visitor.get("/_ui/statebus.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["x-content-type-options"] == "nosniff"
        index = await visitor.get("/_ui/")
        assert "/_ui/browser.js" in index.text
        assert (await visitor.get("/_ui/missing.js")).status_code == 404
        assert (await visitor.get("/_ui/%2e%2e/statebus/keys.py")).status_code == 404
        assert (await visitor.get("/_app/")).status_code == 400  # no app: not a key either


async def test_app_is_the_front_page_and_serves_no_sources(node_factory: object) -> None:
    make = node_factory
    assert callable(make)
    node: Node = await make("with-app", app="apps.twitter_clone")
    async with node.client(owner=False) as visitor:
        front = await visitor.get("/", headers={"Accept": BROWSER_ACCEPT})
        assert "/_app/app.js" in front.text
        elsewhere = await visitor.get("/profile", headers={"Accept": BROWSER_ACCEPT})
        assert "/_ui/browser.js" in elsewhere.text
        assert (await visitor.get("/_app/app.js")).status_code == 200
        assert (await visitor.get("/_app/__init__.py")).status_code == 404
        assert (await visitor.get("/_app/timeline.py")).status_code == 404


async def put_by_curl(node: Node, key: str, value: object) -> None:
    """A change made by someone else: curl if the machine has it, else httpx."""
    body = json.dumps(value)
    if shutil.which("curl"):
        await anyio.run_process(
            [
                "curl", "-sS", "--fail", "-X", "PUT", f"{node.url}{key}",
                "-H", f"Authorization: Bearer {node.token}",
                "-H", "Content-Type: application/json",
                "--data-binary", body,
            ]
        )  # fmt: skip
        return
    async with node.client() as http:
        (await http.put(key, content=body, headers={"Content-Type": "application/json"}))


async def test_key_browser_shows_a_change_made_by_curl_without_reload(
    node: Node, client: httpx.AsyncClient, pages: Pages
) -> None:
    await client.put("/profile", json={"name": "Ada", "bio": "counts things"})
    await client.put("/posts/first", json={"text": "hello"})
    page = await pages.open(node, "/profile")
    value = page.locator("#key-value")
    await expect(value).to_contain_text('"name": "Ada"')
    await expect(page.locator("#keys li.doc.selected")).to_contain_text("profile")
    await expect(page.locator("#keys")).to_contain_text("posts/")
    await expect(page.locator("#status")).to_have_text("live")
    await page.evaluate("() => { window.stillHere = true; }")

    await put_by_curl(node, "/profile", {"name": "Ada Lovelace", "bio": "counts things"})
    await expect(value).to_contain_text('"name": "Ada Lovelace"')
    await expect(page.locator("#keys li.selected .preview")).to_contain_text("Ada Lovelace")
    assert await page.evaluate("() => window.stillHere") is True  # no reload happened
    await expect(page.locator("#node-id")).to_have_text(node.node_id)
    share = await page.locator("#share-line").input_value()
    assert share == f"{node.node_id}@{node.url.removeprefix('http://')}"
    await pages.screenshot(page)


async def test_key_browser_walks_folders_and_edits_json(
    node: Node, client: httpx.AsyncClient, pages: Pages
) -> None:
    await client.put("/posts/a", json={"text": "<b>not bold</b>"})
    await client.put("/posts/deep/b", json={"text": "two"})
    page = await pages.open(node, "/_ui/")
    await page.get_by_role("link", name="posts/").click()
    await expect(page).to_have_url(f"{node.url}/posts/")
    await expect(page.locator("#keys")).to_contain_text("deep/")
    await expect(page.locator("#keys b")).to_have_count(0)  # a value is text, never markup
    await page.get_by_role("link", name="a", exact=True).click()
    await expect(page.locator("#key-value")).to_contain_text("<b>not bold</b>")

    await page.get_by_role("button", name="edit").click()
    await page.locator("#editor-text").fill("{oops")
    await page.get_by_role("button", name="save").click()
    await expect(page.locator("#editor-error")).to_contain_text("not JSON")
    await page.locator("#editor-text").fill('{"text": "edited", "n": 2}')
    await page.get_by_role("button", name="save").click()
    await expect(page.locator("#key-value")).to_contain_text('"edited"')
    stored = await client.get("/posts/a", headers={"Accept": "application/json"})
    assert stored.json() == {"text": "edited", "n": 2}

    await page.locator("#new-key-name").fill("notes")
    await page.get_by_role("button", name="create").click()
    await expect(page).to_have_url(f"{node.url}/posts/notes")
    await page.locator("#editor-text").fill('{"made": "here"}')
    await page.get_by_role("button", name="save").click()
    await expect(page.locator("#keys")).to_contain_text("notes")
    await pages.screenshot(page)

    page.on("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="delete").click()
    await expect(page.locator("#key-value")).to_have_text("no value")
    await expect(page.locator("#keys")).not_to_contain_text("notes")
    await page.go_back()
    await expect(page.locator("#key-name")).to_have_text("/posts/a")


async def test_key_browser_shares_a_key_and_a_visitor_can_then_read_it(
    node: Node, client: httpx.AsyncClient, pages: Pages
) -> None:
    await client.put("/notes/open", json={"text": "for anyone"})
    await client.put("/notes/closed", json={"text": "for me"})
    async with node.client(owner=False) as visitor:
        assert (await visitor.get("/notes/open", headers=JSON)).status_code == 404
    page = await pages.open(node, "/notes/open")
    sharing = page.locator("#sharing")
    await expect(sharing.locator("#sharing-now")).to_have_text("private", timeout=20_000)
    await expect(sharing.locator("#sharing-by")).to_have_text("private by default")
    await sharing.locator("#sharing-choice").select_option("public")
    await sharing.get_by_role("button", name="share").click()
    await expect(sharing.locator("#sharing-now")).to_have_text("public")
    await expect(sharing.locator("#sharing-by")).to_have_text("by its own rule")
    await expect(page.locator("#keys li.doc", has_text="open").locator(".badge")).to_have_text(
        "public"
    )
    async with node.client(owner=False) as visitor:
        assert (await visitor.get("/notes/open", headers=JSON)).json() == {"text": "for anyone"}
        assert (await visitor.get("/notes/closed", headers=JSON)).status_code == 404

    # A folder rule covers its keys; a key's own rule wins over it.
    await page.get_by_role("link", name="notes/").click()
    await sharing.locator("#sharing-choice").select_option("ids")
    await sharing.locator("#sharing-ids").fill(node.node_id)
    await sharing.get_by_role("button", name="share").click()
    await expect(sharing.locator("#sharing-now")).to_have_text("shared with 1")
    await page.get_by_role("link", name="closed", exact=True).click()
    await expect(sharing.locator("#sharing-by")).to_have_text("as its folder /notes/")
    await sharing.locator("#sharing-choice").select_option("ids")
    await sharing.locator("#sharing-ids").fill("not-a-node-id")
    await sharing.get_by_role("button", name="share").click()
    await expect(sharing.locator("#sharing-error")).to_contain_text("not-a-node-id")
    rules = (await client.get("/_acl", headers=JSON)).json()
    assert rules == {"/notes/open": {"read": "public"}, "/notes/": {"read": [node.node_id]}}
    await pages.screenshot(page)


async def test_key_browser_tells_a_visitor_how_to_log_in(node: Node, pages: Pages) -> None:
    page = await pages.open(node, "/profile", login=False)
    await expect(page.locator("#login-hint")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("not logged in")
    await pages.screenshot(page)


async def test_key_browser_shows_peers_and_their_namespaces(
    node_factory: NodeFactory, pages: Pages
) -> None:
    a = await node_factory("a")
    b = await node_factory("b")
    await add_peer(b, a)
    await publish(a)  # private is the default: peers get only what is shared
    async with a.client() as http:
        await http.put("/profile", json={"name": "A"})
    page = await pages.open(b, "/_ui/")
    peers = page.locator("#peer-list li")
    await expect(peers).to_contain_text("connected", timeout=20_000)
    await expect(peers).to_contain_text(f"dials {share_line(a).split('@')[1]}")
    await peers.get_by_role("link").click()
    await expect(page).to_have_url(f"{b.url}/~{a.node_id}/")
    await expect(page.locator("#keys")).to_contain_text("profile", timeout=20_000)
    async with a.client() as http:
        await http.put("/profile", json={"name": "A, renamed at A"})
    await expect(page.locator("#keys")).to_contain_text("renamed at A", timeout=20_000)
    await expect(page.locator("#new-key")).to_be_hidden()  # a replica takes no writes here
    await page.get_by_role("link", name="profile", exact=True).click()
    await expect(page.locator("#key-value")).to_contain_text("renamed at A")
    await expect(page.locator("#edit")).to_be_hidden()
    await pages.screenshot(page)
