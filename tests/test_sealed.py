"""Documents sealed to some friends: relays keep them and cannot read them; the
friends' nodes open them; removing a friend keeps new entries from them."""

from __future__ import annotations

from typing import Any

import httpx

from statebus.identity import Identity, NodeId
from statebus.sealing import new_document_key, seal_keys, seal_update
from tests.conftest import Node, NodeFactory
from tests.federated import (
    FAST,
    FakePeer,
    eventually,
    has_value,
    keys,
    publish,
    share,
    value,
    yjs_update,
)
from tests.sse import open_stream

JSON = {"Accept": "application/json"}


async def put_sealed(
    http: httpx.AsyncClient, key: str, body: dict[str, Any], to: list[str]
) -> httpx.Response:
    response = await http.put(key, json=body, headers={"Encrypt-To": ", ".join(to)})
    assert response.status_code == 200, response.text
    return response


async def stored_bytes(node: Node, key: str) -> bytes:
    return b"".join(entry.update for entry in (await node.running.bus.log(key)).entries)


async def test_the_owner_reads_a_sealed_document_and_the_disk_holds_ciphertext(
    node: Node,
) -> None:
    friend = Identity.generate().node_id
    async with node.client() as owner, node.client(owner=False) as visitor:
        await put_sealed(owner, "/diary/today", {"text": "secret plans"}, [friend])
        await owner.patch(
            "/diary/today",
            content=b'{"mood": "calm"}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert (await owner.get("/diary/today", headers=JSON)).json() == {
            "text": "secret plans",
            "mood": "calm",
        }
        on_disk = await stored_bytes(node, f"/~{node.node_id}/diary/today")
        assert b"secret plans" not in on_disk and b"calm" not in on_disk
        # Even in a public folder, a visitor never sees a sealed document's plaintext.
        await publish(node, "/diary/")
        assert (await visitor.get("/diary/today", headers=JSON)).status_code == 404
        listing = (await visitor.get("/diary/", headers=JSON)).json()
        assert listing["keys"] == []
        # A key written in the clear cannot be sealed afterwards: its entries are out.
        await owner.put("/plain", json={"a": 1})
        late = await owner.put("/plain", json={"a": 2}, headers={"Encrypt-To": friend})
        assert late.status_code == 409
        bad = await owner.put("/x", json={"a": 1}, headers={"Encrypt-To": "not-a-node"})
        assert bad.status_code == 400


async def test_a_relay_stores_what_it_cannot_read_and_the_friend_reads_it(
    node_factory: NodeFactory,
) -> None:
    """A writes a post sealed to B; B reaches A only through C, which relays it."""
    a = await node_factory("a", **FAST)
    c = await node_factory("c", peers=(share(a),), **FAST)
    b = await node_factory("b", peers=(share(c),), **FAST)
    key = f"/~{a.node_id}/letters/1"
    async with a.client() as on_a, b.client() as on_b:
        await put_sealed(on_a, "/letters/1", {"text": "for B only"}, [b.node_id])
        # B reads A's key: it asks its peers (C), C asks A, and relays.
        await eventually(lambda: has_value(b, key, {"text": "for B only"}))
        assert await keys(c, a.node_id) == [key]
        assert b"for B only" not in await stored_bytes(c, key)
        async with c.client() as on_c:
            refused = (await on_c.get(key, headers=JSON)).json()
        assert "sealed to other nodes" in refused["detail"]

        reader, stream = await open_stream(on_b, key)
        try:
            assert (await reader.data()).json()["value"] == {"text": "for B only"}
            await on_a.patch(
                "/letters/1",
                content=b'{"p.s.": "and more"}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            event = await reader.data()
            assert event.json()["value"] == {"text": "for B only", "p.s.": "and more"}
        finally:
            await stream.aclose()

        # Removed: B keeps what it had, and cannot open what comes after.
        await put_sealed(on_a, "/letters/1", {"text": "B is out"}, [])
        written = len((await a.running.bus.log(key)).entries)
        await eventually(lambda: _holds_entries(b, key, written))  # B has them all
        assert await value(b, key) == {"text": "for B only", "p.s.": "and more"}
        assert (await on_a.get("/letters/1", headers=JSON)).json() == {"text": "B is out"}


async def _holds_entries(node: Node, key: str, count: int) -> bool:
    return len((await node.running.bus.log(key)).entries) >= count


async def test_a_friend_added_later_reads_the_past_too(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    d = await node_factory("d", peers=(share(a),), **FAST)
    key = f"/~{a.node_id}/club/notes"
    async with a.client() as on_a:
        await put_sealed(on_a, "/club/notes", {"first": "meeting"}, [b.node_id])
        await eventually(lambda: has_value(b, key, {"first": "meeting"}))
        assert await value(d, key) is None  # D holds it, sealed away from it
        await put_sealed(on_a, "/club/notes", {"first": "meeting", "second": "dinner"},
                         [b.node_id, d.node_id])  # fmt: skip
        both = {"first": "meeting", "second": "dinner"}
        await eventually(lambda: has_value(d, key, both))
        await eventually(lambda: has_value(b, key, both))


async def test_tampered_ciphertext_is_refused_with_a_clear_reason(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory("n", **FAST)
    async with FakePeer(node) as peer:
        own = NodeId(node.node_id)
        document_key = new_document_key()
        keys_entry = peer.entry("/sealed", seal_keys(0, document_key, [peer.node_id, own]))
        good = peer.entry(
            "/sealed", seal_update(peer.node_id, "/sealed", 0, document_key, yjs_update(a=1.0))
        )
        assert (await peer.push(keys_entry, good)).status_code == 204
        key = f"/~{peer.node_id}/sealed"
        assert await value(node, key) == {"a": 1}
        # Signed by its author, but the ciphertext was altered before it was signed.
        payload = seal_update(peer.node_id, "/sealed", 0, document_key, yjs_update(a=2.0))
        tampered = peer.entry("/sealed", payload[:-1] + bytes([payload[-1] ^ 1]))
        assert (await peer.push(tampered)).status_code == 204
        assert await value(node, key) == {"a": 1}
        async with node.client() as http:
            (status,) = (await http.get("/_peers")).json()["peers"]
        assert status["refused"] == 1
        assert "fails to authenticate" in status["last_error"]
        # A key sealed to someone else: kept (a relay), unread.
        other = new_document_key()
        foreign = peer.entry("/elsewhere", seal_keys(0, other, [peer.node_id]))
        hidden = peer.entry(
            "/elsewhere", seal_update(peer.node_id, "/elsewhere", 0, other, yjs_update(b=1.0))
        )
        assert (await peer.push(foreign, hidden)).status_code == 204
        assert len((await node.running.bus.log(f"/~{peer.node_id}/elsewhere")).entries) == 2
        assert await value(node, f"/~{peer.node_id}/elsewhere") is None
