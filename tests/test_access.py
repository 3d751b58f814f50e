"""Private by default, shared on purpose: who sees what, on every read path."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from statebus.access import ANONYMOUS, OWNER, Access, parse_rules, peer
from statebus.errors import InvalidBody
from statebus.identity import Identity
from tests.conftest import Node
from tests.sse import SSEReader, open_stream

JSON = {"Accept": "application/json"}
BINARY = {"Accept": "application/octet-stream"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
FRIEND = Identity.generate().node_id
STRANGER = Identity.generate().node_id


def make_access(rules: dict[str, Any]) -> Access:
    own = Identity.generate().node_id
    access = Access(own)
    access.update(rules)
    return access


def canonical(access: Access, path: str) -> str:
    return f"/~{access.own}{path}"


def test_the_most_specific_rule_decides() -> None:
    access = make_access(
        {
            "/posts/": {"read": "public"},
            "/posts/drafts/": {"read": "private"},
            "/posts/drafts/shared": {"read": [FRIEND]},
            "/forum/": {"read": [FRIEND], "write": [FRIEND]},
        }
    )

    def reads(who: Any, path: str) -> bool:
        return access.can_read(who, canonical(access, path))

    assert reads(ANONYMOUS, "/posts/1") and reads(peer(STRANGER), "/posts/a/b")
    assert not reads(ANONYMOUS, "/posts/drafts/x")
    assert reads(peer(FRIEND), "/posts/drafts/shared") and not reads(
        ANONYMOUS, "/posts/drafts/shared"
    )
    assert reads(peer(FRIEND), "/forum/t/1") and not reads(peer(STRANGER), "/forum/t/1")
    assert not reads(ANONYMOUS, "/profile")  # private is the default
    assert all(reads(OWNER, p) for p in ["/profile", "/posts/drafts/x", "/forum/t"])
    assert not reads(ANONYMOUS, f"/~{FRIEND}/posts/1")  # other namespaces are not re-shared
    assert access.can_write(FRIEND, canonical(access, "/forum/t/1"))
    assert not access.can_write(STRANGER, canonical(access, "/forum/t/1"))
    assert not access.can_write(FRIEND, canonical(access, "/posts/1"))
    assert access.can_write(access.own, canonical(access, "/anything"))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"posts/": {"read": "public"}}, "starts with '/'"),
        ({"/a/../b": {"read": "public"}}, "'..'"),
        ({"/x": {"read": "everyone"}}, "list of node ids"),
        ({"/x": {"read": ["not-an-id"]}}, "not-an-id|length"),
        ({"/x": {"write": "public"}}, "list of node ids"),
        ({"/x": {"delete": []}}, '"read" and/or "write"'),
        ({"/x": "public"}, '"read" and/or "write"'),
        ({f"/~{FRIEND}/x": {"read": "public"}}, "a key of this node"),
    ],
)
def test_bad_rules_are_refused(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidBody, match=message):
        parse_rules(rules, Identity.generate().node_id)


async def share(owner: httpx.AsyncClient, rules: dict[str, Any]) -> None:
    response = await owner.patch("/_acl", json=rules, headers=MERGE_PATCH)
    assert response.status_code == 200, response.text


async def visible_to(visitor: httpx.AsyncClient, path: str) -> dict[str, bool]:
    """What a visitor sees of one key, on every read path."""
    json_read = await visitor.get(path, headers=JSON)
    binary = await visitor.get(path, headers=BINARY)
    folder = path.rsplit("/", 1)[0] + "/"
    listing = (await visitor.get(folder, headers=JSON)).json()
    request = visitor.build_request("GET", path, headers={"Accept": "text/event-stream"})
    stream = await visitor.send(request, stream=True)
    try:
        sse = stream.status_code == 200 and (await SSEReader(stream).data()).json()["value"]
    finally:
        await stream.aclose()
    return {
        "json": json_read.status_code == 200,
        "binary": binary.status_code == 200,
        "listing": path in [k["key"] for k in listing["keys"]],
        "sse": bool(sse),
    }


async def test_visitors_see_only_what_is_shared_on_every_read_path(node: Node) -> None:
    async with node.client() as owner, node.client(owner=False) as visitor:
        for path in ["/open/a", "/open/closed", "/secret/b", "/profile"]:
            await owner.put(path, json={"at": path})
        await share(owner, {"/open/": {"read": "public"}, "/open/closed": {"read": "private"}})
        everything = {"json": True, "binary": True, "listing": True, "sse": True}
        nothing = dict.fromkeys(everything, False)
        assert await visible_to(visitor, "/open/a") == everything
        assert await visible_to(visitor, "/open/closed") == nothing
        assert await visible_to(visitor, "/secret/b") == nothing
        assert await visible_to(visitor, "/profile") == nothing
        assert await visible_to(owner, "/secret/b") == everything
        # A private key and a key never written answer alike: nothing leaks.
        hidden = await visitor.get("/secret/b", headers=JSON)
        never = await visitor.get("/secret/never", headers=JSON)
        assert (hidden.status_code, hidden.json()["error"]) == (
            never.status_code,
            never.json()["error"],
        )
        root = (await visitor.get("/", headers=JSON)).json()
        assert [k["key"] for k in root["keys"]] == ["/open/a"]


async def test_a_visitors_folder_stream_carries_only_shared_keys(node: Node) -> None:
    async with node.client() as owner, node.client(owner=False) as visitor:
        await owner.put("/mixed/public", json={"n": 0})
        await owner.put("/mixed/private", json={"n": 0})
        await share(owner, {"/mixed/public": {"read": "public"}})
        reader, stream = await open_stream(visitor, "/mixed/")
        try:
            listed = await reader.data()
            assert listed.json()["key"] == "/mixed/public"
            assert (await reader.data()).event == "synced"
            await owner.put("/mixed/private", json={"n": 1})
            await owner.put("/mixed/public", json={"n": 2})
            change = await reader.data()
            assert (change.json()["key"], change.json()["value"]) == ("/mixed/public", {"n": 2})
            # Revoked: nothing more reaches the visitor.
            await share(owner, {"/mixed/public": {"read": "private"}})
            await owner.put("/mixed/public", json={"n": 3})
            await owner.put("/mixed/other", json={"n": 4})
            await share(owner, {"/mixed/other": {"read": "public"}})
            await owner.put("/mixed/other", json={"n": 5})
            after = await reader.data()
            assert (after.json()["key"], after.json()["value"]) == ("/mixed/other", {"n": 5})
        finally:
            await stream.aclose()


async def test_a_visitor_resuming_a_folder_stream_gets_only_shared_changes(node: Node) -> None:
    async with node.client() as owner, node.client(owner=False) as visitor:
        await share(owner, {"/box/open": {"read": "public"}})
        await owner.put("/box/open", json={"n": 0})
        reader, stream = await open_stream(visitor, "/box/")
        await reader.data()
        synced = await reader.data()
        await stream.aclose()
        await owner.put("/box/closed", json={"n": 1})
        await owner.put("/box/open", json={"n": 2})
        reader, stream = await open_stream(visitor, "/box/", {"Last-Event-ID": synced.id or ""})
        try:
            event = await reader.data()
            assert (event.json()["key"], event.json()["value"]) == ("/box/open", {"n": 2})
        finally:
            await stream.aclose()


async def test_the_sharing_document(node: Node) -> None:
    async with node.client() as owner, node.client(owner=False) as visitor:
        assert (await owner.get("/_acl", headers=JSON)).json() == {}
        assert (await visitor.get("/_acl", headers=JSON)).status_code == 401
        assert (await visitor.patch("/_acl", json={}, headers=MERGE_PATCH)).status_code == 401
        await share(owner, {"/posts/": {"read": "public"}})
        await share(owner, {"/posts/": {"write": [FRIEND]}})
        rules = (await owner.get("/_acl", headers=JSON)).json()
        assert rules == {"/posts/": {"read": "public", "write": [FRIEND]}}
        bad = await owner.patch("/_acl", json={"/x": {"read": 7}}, headers=MERGE_PATCH)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_body"
        assert (await owner.get("/_acl", headers=JSON)).json() == rules
        # Not a document anyone can reach by a key, and never listed.
        assert (await owner.get("/", headers=JSON)).json()["keys"] == []
        await share(owner, {"/posts/": None})
        assert (await owner.get("/_acl", headers=JSON)).json() == {}


async def test_sharing_survives_a_restart(node: Node) -> None:
    async with node.client() as owner:
        await owner.put("/pub", json={"a": 1})
        await share(owner, {"/pub": {"read": "public"}})
    await node.stop()
    await node.start()
    async with node.client(owner=False) as visitor:
        assert (await visitor.get("/pub", headers=JSON)).json() == {"a": 1}


async def test_visitors_cannot_write_even_what_they_can_read(node: Node) -> None:
    async with node.client() as owner, node.client(owner=False) as visitor:
        await owner.put("/pub", json={"a": 1})
        await share(owner, {"/pub": {"read": "public"}})
        refused = await visitor.put("/pub", json={"a": 2})
        assert refused.status_code == 401
        update = base64.b64decode("AAA=")
        assert (await visitor.put("/pub", content=update)).status_code == 401
        assert (await visitor.get("/pub", headers=JSON)).json() == {"a": 1}
