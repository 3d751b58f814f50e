"""web/statebus.js in the real browser, against real nodes."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Page, Route

from tests.browser import BLANK, Pages
from tests.conftest import Node
from tests.wait import eventually

RECORD = """(keys) => {
    window.bus = new Statebus();
    window.seen = {};
    window.statuses = [];
    bus.status((status) => statuses.push({...status, error: status.error && status.error.status}));
    for (const key of keys) {
        seen[key] = [];
        bus.get(key, (value, info) => seen[key].push({value, ...info}));
    }
}"""


async def seen(page: Page, key: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("(key) => window.seen[key]", key)
    return events


async def until(page: Page, condition: str, arg: Any = None, within: float = 15) -> None:
    try:
        await page.wait_for_function(condition, arg=arg, timeout=within * 1000)
    except Exception:
        state = await page.evaluate(
            """() => ({seen: window.seen, statuses: window.statuses, channels: window.bus &&
                [...bus.channels.values()].map((c) => ({key: c.key, state: c.source &&
                c.source.readyState, tries: c.tries, versions: [...c.versions]}))})"""
        )
        print("page state:", state)
        raise


async def cut_writes(page: Page, pattern: str) -> str:
    """Make writes to URLs matching ``pattern`` fail as if the node were unreachable
    (reads still pass); ``page.unroute(pattern)`` mends it. Returns ``pattern``."""

    async def unreachable(route: Route) -> None:
        await (route.abort() if route.request.method != "GET" else route.continue_())

    await page.route(pattern, unreachable)
    return pattern


async def test_put_patch_delete_and_read_once(node: Node, pages: Pages) -> None:
    page = await pages.open(node, BLANK)
    result = await page.evaluate(
        """async () => {
            const bus = new Statebus();
            const put = await bus.put('/profile', {name: 'Ada'});
            const patched = await bus.patch('/profile', {bio: 'math', name: null});
            const read = await bus.get('/profile');
            await bus.delete('/profile');
            const gone = await bus.get('/profile');
            const errors = [];
            for (const write of [() => bus.put('/profile', [1]), () => bus.put('x', {})]) {
                try { await write(); } catch (error) { errors.push(error.name); }
            }
            try { await bus.put('/_machinery', {a: 1}); }
            catch (error) { errors.push([error.name, error.status, error.code]); }
            const listing = await bus.get('/');
            return {put, patched, read, gone, errors, listing, status: bus._status()};
        }"""
    )
    assert result["put"]["key"] == "/profile"
    assert result["patched"]["version"] > result["put"]["version"]
    assert result["read"] == {"bio": "math"}
    assert result["gone"] is None
    assert result["errors"] == ["TypeError", "TypeError", ["StatebusError", 400, "invalid_key"]]
    assert result["listing"]["keys"] == []
    assert result["status"] == {"online": True, "pending": 0, "error": None}
    await pages.screenshot(page)


async def test_live_key_and_folder_tell_each_change_once(
    node: Node, client: httpx.AsyncClient, pages: Pages
) -> None:
    await client.put("/items/a", json={"n": 0})
    page = await pages.open(node, BLANK)
    await page.evaluate(RECORD, ["/counter", "/items/"])
    await until(page, "seen['/counter'].length === 1 && seen['/items/'].length === 1")
    first = (await seen(page, "/items/"))[0]
    assert first["value"] == {"/items/a": {"n": 0}} and first["synced"] is True
    assert (await seen(page, "/counter"))[0]["value"] is None  # never written: null, once
    for n in range(1, 11):
        await client.put("/counter", json={"n": n})
    await client.put("/items/b", json={"n": 1})
    await client.put("/items/deeper/c", json={"n": 2})
    await client.delete("/items/a")
    await until(page, "seen['/counter'].length === 11 && seen['/items/'].length === 4")
    counter = await seen(page, "/counter")
    assert [event["value"]["n"] for event in counter[1:]] == list(range(1, 11))
    versions = [event["version"] for event in counter]
    assert versions == sorted(set(versions))
    folder = await seen(page, "/items/")
    assert folder[-1]["value"] == {"/items/b": {"n": 1}, "/items/deeper/c": {"n": 2}}
    assert [event["key"] for event in folder[1:]] == ["/items/b", "/items/deeper/c", "/items/a"]

    # A second callback on the same key shares the stream and gets the value at once.
    late = await page.evaluate(
        """() => new Promise((resolve) => bus.get('/counter', (value) => resolve(value)))"""
    )
    assert late == {"n": 10}
    assert node.running.bus.stats().subscribers == 2
    await page.evaluate("() => bus.close()")
    await eventually(lambda: node.running.bus.stats().subscribers == 0)
    await pages.screenshot(page)


async def test_reconnect_after_restart_resumes_and_flushes_queued_writes(
    node_factory: Any, pages: Pages
) -> None:
    node: Node = await node_factory()
    # Restart on the same port, so that the page's origin (and cookie) stays valid.
    node.settings = dataclasses.replace(node.settings, port=node.port)
    async with node.client() as http:
        await http.put("/items/a", json={"n": 0})
    page = await pages.open(node, BLANK)
    await page.evaluate(RECORD, ["/counter", "/items/"])
    await until(page, "seen['/counter'].length === 1 && seen['/items/'].length === 1")
    async with node.client() as http:
        for n in range(1, 6):
            await http.put("/counter", json={"n": n})
    await until(page, "seen['/counter'].length === 6")

    await node.stop()
    await until(page, "!bus.online")
    await page.evaluate(
        """() => { window.queued = Promise.all([
            bus.put('/counter', {n: 100, by: 'page'}),
            bus.put('/items/z', {n: 26}),
            bus.patch('/items/z', {queued: true}),
        ]); }"""
    )
    await until(page, "bus.queue.length === 3")
    await node.start()
    async with node.client() as http:
        for n in range(6, 11):  # most likely before the browser is back: told by resume
            await http.put("/counter", json={"n": n})
        await http.delete("/items/a")
        answers = await page.evaluate("() => queued")
        assert [answer["key"] for answer in answers] == ["/counter", "/items/z", "/items/z"]
        final = (await http.get("/counter", headers={"Accept": "application/json"})).json()
        items = (await http.get("/items/z", headers={"Accept": "application/json"})).json()
    assert items == {"n": 26, "queued": True}
    await until(
        page,
        "(n) => seen['/counter'].at(-1).value.n === n"
        " && !('/items/a' in (seen['/items/'].at(-1).value))"
        " && seen['/items/'].at(-1).value['/items/z']?.queued === true",
        final["n"],
    )
    counter = await seen(page, "/counter")
    assert counter[-1]["value"] == final
    told = [event["value"]["n"] for event in counter[1:]]
    assert [n for n in told if n != 100] == list(range(1, 11))  # nothing lost, nothing twice
    assert told.count(100) <= 1
    versions = [event["version"] for event in counter]
    assert versions == sorted(set(versions))
    statuses = await page.evaluate("() => statuses")
    assert {"online": False, "pending": 3, "error": None} in statuses
    assert statuses[-1] == {"online": True, "pending": 0, "error": None}
    await pages.screenshot(page)


async def test_a_stream_the_browser_gave_up_on_is_opened_afresh(
    node_factory: Any, pages: Pages
) -> None:
    node: Node = await node_factory()
    node.settings = dataclasses.replace(node.settings, port=node.port)
    async with node.client() as http:
        await http.put("/items/a", json={"n": 1})
        await http.put("/items/b", json={"n": 2})
        await http.put("/counter", json={"n": 1})
    page = await pages.open(node, BLANK)
    await page.evaluate(RECORD, ["/counter", "/items/"])
    await until(page, "seen['/counter'].length === 1 && seen['/items/'].length === 1")
    refused: list[str] = []

    async def refuse_first(route: Route) -> None:
        # The first reconnection of each stream gets a 503: EventSource closes for good.
        path = urlsplit(route.request.url).path
        if path not in refused:
            refused.append(path)
            await route.fulfill(status=503, body="")
        else:
            await route.continue_()

    await page.route(lambda url: urlsplit(url).path in ("/items/", "/counter"), refuse_first)
    await node.stop()
    await node.start()
    async with node.client() as http:  # changes the fresh streams must bring
        await http.delete("/items/a")
        await http.put("/items/c", json={"n": 3})
        await http.put("/counter", json={"n": 2})
        await http.put("/counter", json={"n": 3})
    await until(
        page,
        "seen['/counter'].at(-1).value.n === 3"
        " && JSON.stringify(Object.keys(seen['/items/'].at(-1).value).sort())"
        " === JSON.stringify(['/items/b', '/items/c'])",
    )
    assert sorted(refused) == ["/counter", "/items/"]
    folder = await seen(page, "/items/")
    assert [event.get("key") for event in folder[1:]] == ["/items/c", "/items/a"]
    counter = await seen(page, "/counter")
    versions = [event["version"] for event in counter]
    assert versions == sorted(set(versions))  # a fresh state is told once, never again
    await pages.screenshot(page)


async def test_a_visitor_sees_private_keys_as_null_and_is_told_to_log_in(
    node: Node, client: httpx.AsyncClient, pages: Pages
) -> None:
    await client.put("/profile", json={"name": "Ada"})
    page = await pages.open(node, BLANK, login=False)
    await page.evaluate(RECORD, ["/profile", "/_acl"])  # /_acl answers only the owner
    await until(page, "seen['/profile'].length === 1")
    assert (await seen(page, "/profile"))[0]["value"] is None  # private reads as absent
    await until(page, "statuses.some((status) => status.error === 401)")
    shared = await client.patch(
        "/_acl",
        json={"/profile": {"read": "public"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert shared.status_code == 200
    await until(page, "seen['/profile'].at(-1).value?.name === 'Ada'", within=40)
    await pages.screenshot(page)


async def test_a_write_queued_offline_survives_a_reload_of_the_page(
    node: Node, pages: Pages
) -> None:
    page = await pages.open(node, BLANK)
    blocked = await cut_writes(page, f"{node.url}/notes/**")
    await page.evaluate(
        """() => { window.bus = new Statebus();
            bus.put('/notes/a', {text: 'written offline'});
            bus.patch('/notes/a', {more: 1}); }"""
    )
    await until(page, "bus.queue.length === 2 && !bus.online")
    other_tab = await page.context.new_page()  # the same browser, another tab
    await other_tab.goto(page.url)
    assert await other_tab.evaluate("() => new Statebus().queue.length") == 0

    await page.reload()
    assert await page.evaluate("() => typeof window.bus") == "undefined"  # a new page
    await page.evaluate("() => { window.bus = new Statebus(); }")
    assert await page.evaluate("() => bus.queue.map((op) => op.method)") == ["PUT", "PATCH"]
    # A second Statebus of the page neither takes those writes nor drops them.
    assert await page.evaluate("() => new Statebus().queue.length") == 0
    assert await page.evaluate("() => JSON.parse(Object.values(sessionStorage)[0]).length") == 2
    async with node.client() as http:
        nothing = await http.get("/notes/a", headers={"Accept": "application/json"})
    assert nothing.status_code == 404

    await page.unroute(blocked)  # the node is reachable again: the next try lands
    await until(page, "bus.queue.length === 0 && bus.online", within=60)
    async with node.client() as http:
        answer = await http.get("/notes/a", headers={"Accept": "application/json"})
    assert answer.json() == {"text": "written offline", "more": 1}
    assert await page.evaluate("() => Object.keys(sessionStorage).length") == 0
    await page.reload()  # sent once: nothing is left to send again
    assert await page.evaluate("() => new Statebus().queue.length") == 0


async def test_a_restored_write_the_node_refuses_is_told_through_status(
    node: Node, pages: Pages
) -> None:
    page = await pages.open(node, BLANK, login=False)  # a visitor: writes are refused
    blocked = await cut_writes(page, f"{node.url}/notes/**")
    await page.evaluate("() => { window.bus = new Statebus(); bus.put('/notes/b', {x: 1}); }")
    await until(page, "bus.queue.length === 1 && !bus.online")
    await page.reload()
    await page.evaluate(
        """() => { window.bus = new Statebus(); window.statuses = [];
            bus.status((s) => statuses.push(s.error && s.error.status)); }"""
    )
    await page.unroute(blocked)
    await until(page, "bus.queue.length === 0 && statuses.includes(401)", within=60)
    assert await page.evaluate("() => Object.keys(sessionStorage).length") == 0
    async with node.client() as http:
        nothing = await http.get("/notes/b", headers={"Accept": "application/json"})
    assert nothing.status_code == 404
