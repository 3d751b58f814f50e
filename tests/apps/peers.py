"""Following another node the way the app does it, for tests that need two nodes."""

from __future__ import annotations

import json

from tests.conftest import Node


def share_line(node: Node) -> str:
    return f"{node.node_id}@{node.url.removeprefix('http://')}"


async def add_peer(node: Node, other: Node) -> None:
    """Ask ``node`` to peer with ``other`` at run time (``POST /_peers``)."""
    async with node.client() as http:
        response = await http.post("/_peers", json={"peer": share_line(other)})
    assert response.is_success, response.text


async def publish(node: Node) -> None:
    """What the app does on its owner's first visit: share the profile, posts and likes."""
    rules = {path: {"read": "public"} for path in ("/profile", "/posts/", "/likes/")}
    async with node.client() as http:
        response = await http.patch(
            "/_acl",
            content=json.dumps(rules),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert response.is_success, response.text


async def follow(follower: Node, followed: Node) -> None:
    """What the app's Follow does (both owners having opened the app once): add the
    peer, then note it in ``/following``."""
    await publish(follower)
    await publish(followed)
    await add_peer(follower, followed)
    entry = {"address": share_line(followed).split("@", 1)[1], "since": "2026-01-01T00:00:00Z"}
    async with follower.client() as http:
        response = await http.patch(
            "/following",
            content=json.dumps({followed.node_id: entry}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert response.is_success, response.text
