"""What a node refuses from peers: impostors, forged or misplaced entries; and replays."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import httpx
from pycrdt import Doc, Map

from statebus.federation._auth import CLIENT_PURPOSE, NONCE_SIZE, Dial
from statebus.identity import Identity, NodeId, auth_message
from statebus.store import Entry
from tests.conftest import NodeFactory
from tests.federated import (
    FAST,
    FakePeer,
    eventually,
    has_value,
    publish,
    put,
    share,
    value,
    yjs_update,
)
from tests.sse import open_stream


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_node_claiming_another_id_is_refused(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    victim = NodeId((await node_factory("victim", **FAST)).node_id)
    impostor = Identity.generate()
    client_nonce = os.urandom(NONCE_SIZE)
    async with httpx.AsyncClient(base_url=a.url) as http:
        hello = {"client": victim, "server": a.node_id, "nonce": _b64(client_nonce)}
        answer = (await http.post("/_fed/hello", json=hello)).json()
        server_nonce = base64.b64decode(answer["nonce"])
        stamp = int(time.time())
        message = auth_message(
            CLIENT_PURPOSE, server_nonce, stamp, victim, NodeId(a.node_id), client_nonce
        )
        proof = {
            "client": victim,
            "nonce": answer["nonce"],
            "timestamp": stamp,
            "proof": _b64(impostor.sign(message)),  # not the victim's key
        }
        refused = await http.post("/_fed/auth", json=proof)
        assert refused.status_code == 401
        assert refused.json()["error"] == "not_authenticated"

        # a genuine proof is good once: the nonce is spent
        honest = Identity.generate()
        dial = Dial.start(honest, NodeId(a.node_id))
        answer = (await http.post("/_fed/hello", json=dial.hello())).json()
        genuine = dial.proof(answer)
        assert (await http.post("/_fed/auth", json=genuine)).status_code == 200
        replayed = await http.post("/_fed/auth", json=genuine)
        assert replayed.status_code == 401

        # and without a session token nothing reaches the node
        pushed = await http.post("/_fed/push", content=b"", headers={"Authorization": "Peer x"})
        assert pushed.status_code == 401


async def test_a_dialled_node_with_the_wrong_id_is_refused(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    c = await node_factory("c", **FAST)
    wrong = f"{c.node_id}@127.0.0.1:{a.port}"  # C's id, A's address
    b = await node_factory("b", peers=(wrong,), **FAST)

    async def refused() -> bool:
        async with b.client() as http:
            peers = (await http.get("/_peers")).json()["peers"]
        (link,) = peers
        return bool(link["last_error"]) and not link["connected"]

    await eventually(refused)
    async with b.client() as http:
        (link,) = (await http.get("/_peers")).json()["peers"]
    assert link["id"] == c.node_id
    assert f"the node there is {a.node_id}, not {c.node_id}" in link["last_error"]
    async with a.client() as http:
        assert (await http.get("/_peers")).json()["peers"] == []


async def test_forged_altered_and_misplaced_entries_are_refused(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    async with FakePeer(a) as peer:
        good = peer.entry("/note", yjs_update(text="signed"))
        assert (await peer.push(good)).status_code == 204
        assert await value(a, f"/~{peer.node_id}/note") == {"text": "signed"}
        head = a.running.bus.head

        forged_signature = bytes([good.signature[0] ^ 1]) + good.signature[1:]
        forged = Entry(f"/~{peer.node_id}/forged", good.update, peer.node_id, forged_signature)
        altered_update = yjs_update(text="altered")
        altered = Entry(good.key, altered_update, peer.node_id, good.signature)
        misplaced = peer.entry("/profile", yjs_update(name="owned"), namespace=NodeId(a.node_id))
        moved = Entry(f"/~{peer.node_id}/elsewhere", good.update, peer.node_id, good.signature)
        claimed = Entry(f"/~{a.node_id}/profile", misplaced.update, a.node_id, misplaced.signature)
        assert (await peer.push(forged, altered, misplaced, moved, claimed)).status_code == 204

    assert a.running.bus.head == head  # nothing stored
    assert await value(a, f"/~{peer.node_id}/note") == {"text": "signed"}
    for key in (f"/~{peer.node_id}/forged", f"/~{peer.node_id}/elsewhere", "/profile"):
        assert await value(a, key) is None
    async with a.client() as http:
        (status,) = (await http.get("/_peers")).json()["peers"]
    assert status["id"] == peer.node_id
    assert status["entries_in"] == 1
    assert status["refused"] == 5
    assert "refused 5 entries" in status["last_error"]


async def test_a_replayed_old_entry_changes_nothing(node_factory: NodeFactory) -> None:
    a = await node_factory("a", compact_after=4, **FAST)
    async with FakePeer(a) as peer, a.client() as http:
        old = peer.entry("/note", yjs_update(text="old"))
        await peer.push(old)
        first = (await a.running.bus.log(old.key)).entries[0]
        newer = peer.entry("/note", _overwrite([old.update], text="new"))
        await peer.push(newer)
        assert await value(a, old.key) == {"text": "new"}
        reader, stream = await open_stream(http, old.key)
        try:
            await reader.data()  # the current state
            head = a.running.bus.head
            replay = Entry(old.key, first.update, first.author, first.signature)
            assert (await peer.push(replay, replay)).status_code == 204
            assert a.running.bus.head == head
            assert await value(a, old.key) == {"text": "new"}
            # the next event the subscriber sees is a real change, not the replay
            newest = _overwrite([old.update, newer.update], text="newest")
            await peer.push(peer.entry("/note", newest))
            event = await reader.data()
            assert event.json()["value"] == {"text": "newest"}
        finally:
            await stream.aclose()

        # the node's own entries, compacted away here, come back from a friend: nothing changes
        for n in range(8):
            await put(http, "/x", {"n": n})

        async def compacted() -> bool:
            entries = (await a.running.bus.log(f"/~{a.node_id}/x")).entries
            return entries[0].snapshot

        await a.running.bus._store.signed()  # as a friend holds them: signed
        log_before = (await a.running.bus.log(f"/~{a.node_id}/x")).entries
        await eventually(compacted)
        head = a.running.bus.head
        replays = [Entry(e.key, e.update, e.author, e.signature) for e in log_before[:3]]
        assert (await peer.push(*replays)).status_code == 204
        assert a.running.bus.head == head
        assert await has_value(a, "/x", {"n": 7})


def _overwrite(updates: list[bytes], **fields: object) -> bytes:
    """An update made on top of ``updates`` that sets ``fields``."""
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    before = doc.get_state()
    data = doc.get("data", type=Map)
    with doc.transaction():
        for name, item in fields.items():
            data[name] = item
    return doc.get_update(before)


async def test_peers_can_be_added_at_runtime(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    await publish(a)
    b = await node_factory("b", **FAST)
    async with b.client() as http:
        added = await http.post("/_peers", json={"peer": share(a)})
        assert added.status_code == 201
        assert added.json()["peer"]["id"] == a.node_id
        bad = await http.post("/_peers", json={"peer": "not-an-id@127.0.0.1:1"})
        assert bad.status_code == 400
        assert (await http.get("/_peers", headers={"Authorization": ""})).status_code == 401
    async with a.client() as http:
        await put(http, "/profile", {"name": "Ada"})
    await eventually(lambda: has_value(b, f"/~{a.node_id}/profile", {"name": "Ada"}))
    async with b.client() as http:
        (status,) = (await http.get("/_peers")).json()["peers"]
    assert status["connected"] is True
    assert status["dialled"] is True
    assert status["entries_in"] >= 1
    assert status["last_sync"] is not None
    # remembered across a restart, and forgotten on request
    await b.stop()
    await b.start()
    async with b.client() as http:
        (status,) = (await http.get("/_peers")).json()["peers"]
        assert status["address"] == share(a)
        assert (await http.delete(f"/_peers/{a.node_id}")).status_code == 200
        assert (await http.delete(f"/_peers/{a.node_id}")).status_code == 404
