"""Several real nodes on 127.0.0.1 in one test: replication both ways, relays, partitions."""

from __future__ import annotations

from statebus.identity import NodeId, verify_entry
from tests.conftest import NodeFactory
from tests.federated import FAST, eventually, has_value, put, share, value
from tests.sse import open_stream


async def test_two_nodes_replicate_both_ways_with_sse(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    async with a.client() as on_a, b.client() as on_b:
        await put(on_a, "/profile", {"name": "Ada"})
        await eventually(lambda: has_value(b, f"/~{a.node_id}/profile", {"name": "Ada"}))
        await put(on_b, "/profile", {"name": "Bob"})
        await eventually(lambda: has_value(a, f"/~{b.node_id}/profile", {"name": "Bob"}))

        # live: a subscriber on each side sees the other's writes as they arrive
        reader_b, stream_b = await open_stream(on_b, f"/~{a.node_id}/posts/")
        reader_a, stream_a = await open_stream(on_a, f"/~{b.node_id}/posts/1")
        try:
            synced = await reader_b.data()
            assert synced.event == "synced"
            first = await reader_a.data()
            assert first.json()["value"] is None
            await put(on_a, "/posts/1", {"text": "hello from a"})
            event = await reader_b.data()
            assert event.json()["key"] == f"/~{a.node_id}/posts/1"
            assert event.json()["value"] == {"text": "hello from a"}
            await put(on_b, "/posts/1", {"text": "hello from b"})
            event = await reader_a.data()
            assert event.json()["key"] == f"/~{b.node_id}/posts/1"
            assert event.json()["value"] == {"text": "hello from b"}
        finally:
            await stream_a.aclose()
            await stream_b.aclose()
    assert await value(a, f"/~{a.node_id}/profile") == {"name": "Ada"}


async def test_a_line_relays_and_c_verifies_a_as_author(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    c = await node_factory("c", peers=(share(b),), **FAST)
    async with a.client() as on_a, c.client() as on_c:
        await put(on_a, "/profile", {"name": "Ada"})
        await put(on_a, "/posts/1", {"text": "first"})
        await eventually(lambda: has_value(b, f"/~{a.node_id}/posts/1", {"text": "first"}))
        # C has no link to A: reading /~A/... asks its peers, and B relays
        await eventually(lambda: has_value(c, f"/~{a.node_id}/profile", {"name": "Ada"}))
        reader, stream = await open_stream(on_c, f"/~{a.node_id}/posts/")
        try:
            listed = await reader.data()
            while listed.event != "synced":
                listed = await reader.data()
            await put(on_a, "/posts/2", {"text": "second"})
            while (event := await reader.data()).json()["key"] != f"/~{a.node_id}/posts/2":
                pass
            assert event.json()["value"] == {"text": "second"}
        finally:
            await stream.aclose()
    for key in (f"/~{a.node_id}/profile", f"/~{a.node_id}/posts/2"):
        log = await c.running.bus.log(key)
        assert log.entries
        for entry in log.entries:
            assert entry.author == a.node_id
            verify_entry(
                NodeId(a.node_id),
                NodeId(a.node_id),
                key.split(a.node_id, 1)[1],
                entry.update,
                entry.signature,
            )
