"""Several real nodes on 127.0.0.1 in one test: replication both ways, relays, partitions."""

from __future__ import annotations

import json
import os
import random
import signal
from typing import Any

import anyio
import httpx
import pytest

from statebus.bus import PutValue
from statebus.identity import NodeId, verify_entry
from statebus.keys import parse_key
from statebus.store import SQLiteStore
from tests.conftest import Node, NodeFactory
from tests.federated import (
    FAST,
    describe,
    eventually,
    has_value,
    keys,
    pin_port,
    publish,
    put,
    share,
    state,
    value,
)
from tests.sse import open_stream


async def test_two_nodes_replicate_both_ways_with_sse(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    # each shares everything with the other only (after the link is up: a resync follows)
    await publish(a, "/", [b.node_id])
    await publish(b, "/", [a.node_id])
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
    await publish(a)  # relays pass on only what its owner made public
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


async def _same_everywhere(nodes: list[Node], namespaces: list[str]) -> bool:
    """Whether every node holds every document of ``namespaces`` in the same binary state."""
    for namespace in namespaces:
        names = set()
        for node in nodes:
            names |= set(await keys(node, namespace))
        for key in names:
            states = {await state(node, key) for node in nodes}
            if len(states) != 1:
                return False
    return True


async def test_partition_heals_to_identical_state(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    c = await node_factory("c", **FAST)
    b = await node_factory("b", peers=(share(a), share(c)), **FAST)
    for node in (a, b, c):
        await publish(node)
    namespaces = [a.node_id, b.node_id, c.node_id]
    async with a.client() as on_a, b.client() as on_b, c.client() as on_c:
        # A and C subscribe to each other's namespace; only B links them
        await on_a.get(f"/~{c.node_id}/", headers={"Accept": "application/json"})
        await on_c.get(f"/~{a.node_id}/", headers={"Accept": "application/json"})
        await put(on_a, "/profile", {"name": "Ada", "city": "London"})
        await put(on_b, "/profile", {"name": "Bob"})
        await put(on_c, "/profile", {"name": "Cy"})
        await put(on_c, "/posts/1", {"text": "before"})
        await eventually(lambda: has_value(a, f"/~{c.node_id}/posts/1", {"text": "before"}))
        await eventually(
            lambda: has_value(c, f"/~{a.node_id}/profile", {"name": "Ada", "city": "London"})
        )

        await b.stop()
        await put(on_a, "/profile", {"name": "Ada", "city": "Paris"})
        await put(on_a, "/posts/9", {"text": "while b was away"})
        await on_a.delete("/posts/9")
        await on_c.patch(
            "/posts/1",
            content=b'{"text": "after", "likes": 3}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await put(on_c, "/posts/2", {"text": "new"})
        assert await value(a, f"/~{c.node_id}/posts/2") is None

    await b.start()
    nodes = [a, b, c]
    await eventually(lambda: has_value(a, f"/~{c.node_id}/posts/2", {"text": "new"}))
    await eventually(
        lambda: has_value(c, f"/~{a.node_id}/profile", {"name": "Ada", "city": "Paris"})
    )
    await eventually(lambda: _same_everywhere(nodes, namespaces))
    for node in nodes:
        assert await value(node, f"/~{a.node_id}/posts/9") is None
        assert await value(node, f"/~{c.node_id}/posts/1") == {"text": "after", "likes": 3}
        assert await keys(node, a.node_id) == [f"/~{a.node_id}/posts/9", f"/~{a.node_id}/profile"]


async def _random_write(rng: random.Random, http: httpx.AsyncClient) -> None:
    key = f"/k{rng.randrange(4)}"
    roll = rng.random()
    if roll < 0.5:
        fields = {f"f{i}": rng.randrange(100) for i in range(rng.randrange(1, 4))}
        await put(http, key, fields)
    elif roll < 0.85:
        patch = {f"f{rng.randrange(4)}": rng.choice([None, rng.randrange(100), "text"])}
        response = await http.patch(
            key, content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()
    else:
        response = await http.delete(key)
        assert response.status_code in (200, 404)


async def _write_on(node: Node, rng: random.Random) -> None:
    async with node.client() as http:
        await _random_write(rng, http)


@pytest.mark.parametrize(("seed", "topology"), [(7, "mesh"), (2026, "line")])
async def test_random_writes_with_disconnects_converge(
    node_factory: NodeFactory, seed: int, topology: str
) -> None:
    rng = random.Random(seed)
    a = pin_port(await node_factory("a", **FAST))
    c = pin_port(await node_factory("c", **FAST))
    if topology == "mesh":
        b = pin_port(await node_factory("b", peers=(share(a), share(c)), **FAST))
        async with a.client() as http:
            await http.post("/_peers", json={"peer": share(c)})
    else:  # A - B - C: A and C reach each other only through B, by subscribing
        b = pin_port(await node_factory("b", peers=(share(a), share(c)), **FAST))
        for reader, owner in ((a, c), (c, a)):
            async with reader.client() as http:
                await http.get(f"/~{owner.node_id}/", headers={"Accept": "application/json"})
    nodes = [a, b, c]
    for node in nodes:
        await publish(node)
    namespaces = [node.node_id for node in nodes]
    stopped: Node | None = None
    for step in range(30):  # 30 rounds of concurrent writes: about 80 writes in all
        if step % 6 == 3:  # a random node goes away for a while, or comes back
            if stopped is None:
                stopped = rng.choice(nodes)
                await stopped.stop()
            else:
                await stopped.start()
                stopped = None
        writers = [node for node in nodes if node is not stopped and rng.random() < 0.9]
        seeds = [rng.randrange(2**32) for _ in writers]
        async with anyio.create_task_group() as tg:
            for writer, writer_seed in zip(writers, seeds, strict=True):
                tg.start_soon(_write_on, writer, random.Random(writer_seed))
    if stopped is not None:
        await stopped.start()
    try:
        await eventually(lambda: _same_everywhere(nodes, namespaces), within=30)
    except TimeoutError:
        raise AssertionError(await describe(nodes)) from None
    for namespace in namespaces:
        for key in await keys(a, namespace):
            values = [await value(node, key) for node in nodes]
            assert values[0] == values[1] == values[2]


async def test_a_first_read_of_a_foreign_key_waits_for_the_peers(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    await publish(a)
    b = await node_factory("b", peers=(share(a),), **FAST)
    slow = {**FAST, "fetch_wait": 10.0}
    c = await node_factory("c", peers=(share(b),), **slow)
    async with a.client() as on_a:
        await put(on_a, "/profile", {"name": "Ada"})
    await eventually(lambda: has_value(b, f"/~{a.node_id}/profile", {"name": "Ada"}))
    await eventually(lambda: _linked(c))
    # C never saw A: one GET asks B (statebus style, fetching subscribes) and answers
    assert await value(c, f"/~{a.node_id}/profile") == {"name": "Ada"}
    async with c.client() as on_c:
        listing = await on_c.get(f"/~{a.node_id}/", headers={"Accept": "application/json"})
    assert [k["key"] for k in listing.json()["keys"]] == [f"/~{a.node_id}/profile"]


async def _linked(node: Node) -> bool:
    async with node.client() as http:
        peers = (await http.get("/_peers")).json()["peers"]
    return bool(peers) and all(p["connected"] and p["last_sync"] for p in peers)


async def test_sharing_rules_decide_what_peers_receive_and_relay(
    node_factory: NodeFactory,
) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    c = await node_factory("c", peers=(share(b),), **FAST)
    async with a.client() as on_a:
        await put(on_a, "/posts/1", {"text": "for everyone"})
        await put(on_a, "/diary/1", {"text": "for b"})
        await put(on_a, "/secret", {"text": "for nobody"})
    await publish(a, "/posts/")
    await publish(a, "/diary/", [b.node_id])
    ns = f"/~{a.node_id}"
    await eventually(lambda: has_value(b, f"{ns}/diary/1", {"text": "for b"}))
    await eventually(lambda: has_value(c, f"{ns}/posts/1", {"text": "for everyone"}))
    async with c.client() as on_c:  # C subscribes to all of A, through B
        await on_c.get(f"{ns}/", headers={"Accept": "application/json"})
    async with a.client() as on_a:
        await put(on_a, "/posts/2", {"text": "later, for everyone"})
        await put(on_a, "/diary/2", {"text": "later, for b"})
    await eventually(lambda: has_value(c, f"{ns}/posts/2", {"text": "later, for everyone"}))
    await eventually(lambda: has_value(b, f"{ns}/diary/2", {"text": "later, for b"}))
    assert sorted(await keys(b, a.node_id)) == [
        f"{ns}/diary/1",
        f"{ns}/diary/2",
        f"{ns}/posts/1",
        f"{ns}/posts/2",
    ]  # never the secret, never the sharing rules (/_acl)
    # what A shared with B alone stays with B
    assert sorted(await keys(c, a.node_id)) == [f"{ns}/posts/1", f"{ns}/posts/2"]


async def test_entries_unsigned_at_a_peer_s_catch_up_reach_it_live_once_signed(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node signs its own entries behind their commits. A peer that catches up while
    some are still unsigned (here: the writer process stopped between the commit of
    a batch of big entries and their signing) is sent the signed ones, and the
    others once signed, live, over the same link."""
    a = await node_factory("a", **FAST)
    b = await node_factory("b", **FAST)
    await publish(a, "/", [b.node_id])
    bus = a.running.bus
    store = bus._store
    assert isinstance(store, SQLiteStore)
    writer = store.writer_pid
    assert writer is not None
    stopped = anyio.Event()
    settle = SQLiteStore._settle

    def stop_after_a_big_commit(self: SQLiteStore, jobs: list[Any], outcomes: list[Any]) -> None:
        if self is store and len(jobs) >= 4 and not stopped.is_set():
            # The batch's answer is here; its signatures (about 3 ms an entry: each
            # message of 600 KB is hashed twice) are not.
            os.kill(writer, signal.SIGSTOP)
            stopped.set()
        settle(self, jobs, outcomes)

    monkeypatch.setattr(SQLiteStore, "_settle", stop_after_a_big_commit)
    count = 24
    names = [f"/~{a.node_id}/t/{i}" for i in range(count)]
    pad = "x" * 600_000

    async def arrived(i: int) -> bool:
        held = await value(b, names[i])
        return held is not None and held["i"] == i

    async def write(i: int) -> None:
        await bus.apply(parse_key(f"/t/{i}", bus.own), PutValue({"i": i, "p": pad}))

    for i in range(4):  # one at a time (batches of one), and signed
        await write(i)
    await store.signed()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(4, count):
                tg.start_soon(write, i)
            with anyio.fail_after(10):
                await stopped.wait()
            logs = [await store.load(name) for name in names]
            signed = [i for i, log in enumerate(logs) if log.entries and log.entries[0].signature]
            unsigned = [i for i, log in enumerate(logs) if log.entries and i not in signed]
            assert signed and unsigned  # what the test is about: both kinds in the log
            async with b.client() as http:
                (await http.post("/_peers", json={"peer": share(a)})).raise_for_status()

            async def caught_up() -> bool:
                return all([await arrived(i) for i in signed])

            await eventually(caught_up)
            assert [i for i in unsigned if await arrived(i)] == []
            os.kill(writer, signal.SIGCONT)
    finally:
        os.kill(writer, signal.SIGCONT)

    async def all_arrived() -> bool:
        return all([await arrived(i) for i in range(count)])

    await eventually(all_arrived)
    async with b.client() as http:
        (status,) = (await http.get("/_peers")).json()["peers"]
    assert status["connected"] and status["last_error"] is None  # one link throughout
    for i, name in enumerate(names):
        (entry,) = (await b.running.bus.log(name)).entries
        verify_entry(NodeId(a.node_id), NodeId(a.node_id), f"/t/{i}", entry.update, entry.signature)
