"""The twitter clone's computed /timeline, over HTTP on real nodes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from statebus.computed import Computed
from tests.apps.peers import follow
from tests.conftest import Node, NodeFactory
from tests.sse import open_stream
from tests.wait import eventually

APP = "apps.twitter_clone"


async def timeline_until(client: httpx.AsyncClient, done: Any, within: float = 20) -> Any:
    """The /timeline value, from its event stream, once ``done(value)`` holds."""
    reader, stream = await open_stream(client, "/timeline")
    try:
        while True:
            value = (await reader.data(within)).json()["value"]
            if value is not None and done(value):
                return value
    finally:
        await stream.aclose()


@pytest.fixture
async def app_node(node_factory: NodeFactory) -> Node:
    return await node_factory("app", app=APP)


async def test_own_posts_newest_first_with_threads_likes_and_names(app_node: Node) -> None:
    me = app_node.node_id
    async with app_node.client() as http:
        await http.put("/profile", json={"name": "Ada", "bio": "engines"})
        await http.put("/posts/1", json={"text": "first", "time": "2026-01-01T10:00:00Z"})
        await http.put("/posts/2", json={"text": "<b>second</b>", "time": "2026-01-02T10:00:00Z"})
        await http.put(
            "/posts/3",
            json={"text": "re", "time": "2026-01-03T10:00:00Z", "reply_to": f"/~{me}/posts/1"},
        )
        await http.put("/likes/x", json={"post": f"/~{me}/posts/1", "time": "2026-01-03"})
        await http.put("/posts/bad", json={"text": "forged", "time": "2026", "author": "a" * 56})
        await http.put("/posts/junk", json={"nothing": True})
        value = await timeline_until(
            http, lambda v: len(v["posts"]) == 2 and v["posts"][1]["likes"] == 1
        )
    assert value["following"] == []
    second, first = value["posts"]
    assert second["text"] == "<b>second</b>"  # kept verbatim: the page escapes it
    assert (first["key"], first["name"], first["author"]) == (f"/~{me}/posts/1", "Ada", me)
    assert (first["likes"], first["liked"]) == (1, True)
    assert [reply["text"] for reply in first["replies"]] == ["re"]
    assert first["replies"][0]["reply_to"] == f"/~{me}/posts/1"


async def test_a_node_that_never_used_the_app_holds_no_timeline(app_node: Node) -> None:
    app = app_node.running.app
    assert app is not None
    computed: Computed = app.state.computed
    async with app_node.client() as http:
        before = computed.runs("/timeline")
        await http.put("/profile", json={"name": "Ada"})
        await eventually(lambda: computed.runs("/timeline") > before)
        assert (
            await http.get("/timeline", headers={"Accept": "application/json"})
        ).status_code == 404
        listing = (await http.get("/", headers={"Accept": "application/json"})).json()
        assert [entry["key"] for entry in listing["keys"]] == ["/profile"]


async def test_timeline_updates_when_a_followed_post_arrives(node_factory: NodeFactory) -> None:
    alice = await node_factory("alice", app=APP)
    bob = await node_factory("bob", app=APP)
    async with alice.client() as to_alice, bob.client() as to_bob:
        await to_alice.put("/profile", json={"name": "Alice"})
        await to_alice.put("/posts/old", json={"text": "before", "time": "2026-01-01T00:00:00Z"})
        await follow(bob, alice)
        await timeline_until(to_bob, lambda v: [p["text"] for p in v["posts"]] == ["before"])
        await to_alice.put("/posts/new", json={"text": "after", "time": "2026-01-02T00:00:00Z"})
        value = await timeline_until(to_bob, lambda v: len(v["posts"]) == 2)
        assert [(p["text"], p["name"]) for p in value["posts"]] == [
            ("after", "Alice"),
            ("before", "Alice"),
        ]
        assert value["following"][0]["id"] == alice.node_id
        # Bob's reply and like, in Bob's namespace, reach Alice's timeline and count.
        post = value["posts"][0]["key"]
        await to_bob.put(
            "/posts/re",
            json={"text": "nice", "time": "2026-01-03T00:00:00Z", "reply_to": post},
        )
        await to_bob.put(f"/likes/{alice.node_id}/new", json={"post": post, "time": "now"})
        seen = await timeline_until(
            to_alice, lambda v: v["posts"][0]["likes"] == 1 and v["posts"][0]["replies"]
        )
        assert seen["posts"][0]["replies"][0]["author"] == bob.node_id
