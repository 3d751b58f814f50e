"""Group writing: an owner grants named nodes a folder; their signed entries are
accepted and forwarded, with a grant anyone can check; nobody else's are."""

from __future__ import annotations

import json

from statebus.grants import Grant
from statebus.identity import Identity, NodeId, verify_entry
from tests.conftest import Node, NodeFactory
from tests.federated import FAST, FakePeer, eventually, has_value, share, value, yjs_update

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


async def rules(node: Node, patch: dict[str, object]) -> None:
    async with node.client() as http:
        response = await http.patch("/_acl", json=patch, headers=MERGE_PATCH)
    assert response.status_code == 200, response.text


async def holds_grant(node: Node, namespace: str) -> bool:
    path = node.data_dir / "grants.json"
    return path.exists() and namespace in json.loads(path.read_text())


async def lacks_grant(node: Node, namespace: str) -> bool:
    return not await holds_grant(node, namespace)


async def test_a_granted_writer_writes_the_forum_and_everyone_checks_it(
    node_factory: NodeFactory,
) -> None:
    a = await node_factory("a", **FAST)
    m = await node_factory("m", peers=(share(a),), **FAST)
    n = await node_factory("n", peers=(share(a),), **FAST)
    await rules(a, {"/forum/": {"read": [m.node_id, n.node_id], "write": [m.node_id]}})
    await eventually(lambda: holds_grant(m, a.node_id))
    assert not await holds_grant(n, a.node_id)

    key = f"/~{a.node_id}/forum/hello"
    async with m.client() as on_m, n.client() as on_n:
        written = await on_m.put(key, json={"text": "hi from m"})
        assert written.status_code == 200, written.text
        # The owner's node accepts it, and forwards it to the other member.
        await eventually(lambda: has_value(a, "/forum/hello", {"text": "hi from m"}))
        await eventually(lambda: has_value(n, key, {"text": "hi from m"}))
        (entry,) = (await n.running.bus.log(key)).entries
        assert entry.author == m.node_id
        verify_entry(
            NodeId(m.node_id), NodeId(a.node_id), "/forum/hello", entry.update, entry.signature
        )
        Grant.decode(entry.grant).verify(NodeId(a.node_id), NodeId(m.node_id))

        # A member without a grant cannot write; nor can the writer outside its folder.
        refused = await on_n.put(key, json={"text": "n tries"})
        assert refused.status_code == 403 and "not granted" in refused.json()["detail"]
        outside = await on_m.put(f"/~{a.node_id}/elsewhere", json={"x": 1})
        assert outside.status_code == 403

        # Taken off the rules: the grant goes, and the writer can no longer write.
        await rules(a, {"/forum/": {"write": []}})
        await eventually(lambda: lacks_grant(m, a.node_id))
        late = await on_m.put(key, json={"text": "m again"})
        assert late.status_code == 403
    assert await value(a, "/forum/hello") == {"text": "hi from m"}


async def test_entries_without_a_valid_grant_are_refused(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    async with FakePeer(a) as peer:
        await rules(a, {"/forum/": {"write": [peer.node_id]}})
        own = NodeId(a.node_id)
        unsigned = peer.entry("/forum/x", yjs_update(t="no grant"), namespace=own)
        forged = peer.entry("/forum/y", yjs_update(t="forged grant"), namespace=own)
        forged.grant = Grant.issue(peer.identity, peer.node_id, "/forum/").encode()
        stranger = Identity.generate()
        elsewhere = peer.entry("/other/z", yjs_update(t="out of its folder"), namespace=own)
        elsewhere.grant = Grant.issue(stranger, peer.node_id, "/other/").encode()
        for entry in (unsigned, forged, elsewhere):
            assert (await peer.push(entry)).status_code == 204
        for path in ("/forum/x", "/forum/y", "/other/z"):
            assert await value(a, path) is None
        async with a.client() as http:
            (status,) = (await http.get("/_peers")).json()["peers"]
        assert status["refused"] == 3
