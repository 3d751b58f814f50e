"""A peer's pushes are numbered and taken in that order, a few in flight at once.

A dialler keeps ``PUSHES_IN_FLIGHT`` POSTs open; the node stages each only after
every earlier one (so a document's log stays in causal order whatever order the
requests arrive in) and checks the next while one commits.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Doc, Map

from statebus.bus import PutValue
from statebus.errors import ProtocolError, QuotaExceeded
from statebus.federation import PUSH_HEADER
from statebus.federation._order import Order
from statebus.federation._session import Session
from statebus.federation._wire import encode_entries
from statebus.keys import Key
from statebus.quotas import Limits
from tests.conftest import Node, NodeFactory
from tests.federated import FAST, FakePeer, eventually, publish, share, state, value


def _session_of(node: Node, peer: str) -> Session:
    app = node.running.app
    assert app is not None
    sessions = [s for s in app.state.federation.hub.sessions if s.peer == peer]
    assert len(sessions) == 1
    session: Session = sessions[0]
    return session


def _two_writes() -> tuple[bytes, bytes]:
    """Two Yjs updates of one document, the second overwriting what the first wrote
    (so it cannot be integrated without it)."""
    doc: Doc[Any] = Doc()
    made: list[bytes] = []
    doc.observe(lambda event: made.append(event.update))
    data = doc.get("data", type=Map)
    data["text"] = "first"
    data["text"] = "second"
    return made[0], made[1]


async def _waiting(node: Node, peer: str, count: int) -> bool:
    return _session_of(node, peer).pushes_waiting == count


async def test_pushes_arriving_out_of_order_are_taken_in_their_order(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory("b", **FAST)
    first, second = _two_writes()
    async with FakePeer(node) as peer:
        one, two = peer.entry("/note", first), peer.entry("/note", second)
        async with anyio.create_task_group() as tg:
            answers: dict[int, httpx.Response] = {}

            async def push(number: int, entry: Any) -> None:
                answers[number] = await peer.push(entry, number=number)

            tg.start_soon(push, 1, two)
            await eventually(lambda: _waiting(node, peer.node_id, 1))
            assert node.running.bus.head == 0  # push 1 waits for push 0
            tg.start_soon(push, 0, one)
        assert answers[0].status_code == answers[1].status_code == 204
        key = f"/~{peer.node_id}/note"
        log = await node.running.bus.log(key)
        assert [entry.signature for entry in log.entries] == [one.signature, two.signature]
        assert await value(node, key) == {"text": "second"}


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, PUSH_HEADER),
        ("-1", PUSH_HEADER),
        ("first", PUSH_HEADER),
        ("8", "more than 8 ahead of batch 0"),
    ],
)
async def test_a_push_without_a_usable_number_is_refused(
    node_factory: NodeFactory, header: str | None, problem: str
) -> None:
    node = await node_factory("b", **FAST)
    async with FakePeer(node) as peer:
        assert peer.http is not None
        frames = b""  # the number is checked whatever the body holds
        headers = dict(peer.headers)
        if header is not None:
            headers[PUSH_HEADER] = header
        answer = await peer.http.post("/_fed/push", content=frames, headers=headers)
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_body"
        assert problem in answer.json()["detail"]
        assert node.running.bus.head == 0


async def test_a_push_sent_twice_is_refused_and_ends_the_session(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory("b", **FAST)
    first, _ = _two_writes()
    async with FakePeer(node) as peer:
        assert (await peer.push(peer.entry("/a", first), number=0)).status_code == 204
        again = await peer.push(peer.entry("/b", first), number=0)
        assert again.status_code == 400
        assert "sent twice" in again.json()["detail"]
        assert await value(node, f"/~{peer.node_id}/b") is None
        # the session is gone: its token opens nothing more
        assert (await peer.push(peer.entry("/c", first), number=1)).status_code in (401, 403)


async def test_a_push_waiting_for_its_turn_fails_when_the_session_ends(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory("b", **FAST)
    first, _ = _two_writes()
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as other:
        peer = FakePeer(node)
        await peer.__aenter__()
        entry = peer.entry("/late", first)
        headers = {**peer.headers, PUSH_HEADER: "1"}
        async with anyio.create_task_group() as tg:
            answers: list[httpx.Response] = []

            async def push() -> None:
                frames = encode_entries([entry], lambda _key: False)
                answers.append(await other.post("/_fed/push", content=frames, headers=headers))

            tg.start_soon(push)
            await eventually(lambda: _waiting(node, peer.node_id, 1))
            await peer.__aexit__(None, None, None)  # the peer hangs up its stream
        assert answers[0].status_code == 400
        assert "the session closed" in answers[0].json()["detail"]
        assert await value(node, f"/~{peer.node_id}/late") is None


async def test_pushes_after_one_over_the_limit_are_refused_until_it_comes_again(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory("b", limits=Limits(writes_per_minute=5), **FAST)
    first, _ = _two_writes()
    async with FakePeer(node) as peer:
        spent = [peer.entry(f"/n/{i}", first) for i in range(4)]
        assert (await peer.push(*spent, number=0)).status_code == 204
        head = node.running.bus.head
        flood = [peer.entry(f"/flood/{i}", first) for i in range(20)]
        assert (await peer.push(*flood, number=1)).status_code == 429
        after = await peer.push(peer.entry("/after", first), number=2)
        assert after.status_code == 429
        assert "batch 1 was over the limit and must come first" in after.json()["detail"]
        assert int(after.headers["retry-after"]) >= 1
        assert node.running.bus.head == head
        assert await value(node, f"/~{peer.node_id}/after") is None


async def test_a_link_pushes_a_burst_in_order_with_several_in_flight(
    node_factory: NodeFactory,
) -> None:
    """Enough entries for many 256 KiB pushes: the receiver holds every document with
    the same state and its log in the author's order."""
    b = await node_factory("b", **FAST)
    a = await node_factory("a", peers=(share(b),), **FAST)
    await publish(a)
    await eventually(lambda: _linked(b, a.node_id))
    bus = a.running.bus
    keys = [Key(bus.own, f"/burst/{d}") for d in range(8)]

    async def writer(first: int) -> None:
        for n in range(first, 4000, 16):
            await bus.apply(keys[n % len(keys)], PutValue({"n": n, "pad": "x" * 40}))

    async with anyio.create_task_group() as tg:
        for first in range(16):
            tg.start_soon(writer, first)

    async def arrived() -> bool:
        return all([await state(b, key.canonical) == await state(a, key.canonical) for key in keys])

    await eventually(arrived, within=60)
    for key in keys:
        theirs = await b.running.bus.log(key.canonical)
        ours = await bus.log(key.canonical)
        assert [e.signature for e in theirs.entries] == [e.signature for e in ours.entries]
    assert _session_of(b, a.node_id).pushes_taken > 2  # more than one push in flight


async def _linked(node: Node, peer: str) -> bool:
    app = node.running.app
    assert app is not None
    return any(s.peer == peer for s in app.state.federation.hub.sessions)


# -- the order itself ---------------------------------------------------------------


async def test_the_next_batch_is_taken_while_one_commits() -> None:
    order = Order()
    events: list[str] = []
    committed = [asyncio.Event(), asyncio.Event()]

    async def batch(number: int) -> None:
        order.arrive(number)
        async with order.turn(number) as staged:
            events.append(f"staged {number}")
            staged()
            await committed[number].wait()
            events.append(f"committed {number}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(batch, 1)
        tg.start_soon(batch, 0)
        await eventually(lambda: _true(len(events) == 2))
        assert events == ["staged 0", "staged 1"]  # 1 went ahead while 0 commits
        committed[1].set()
        committed[0].set()
    assert events[2:] == ["committed 1", "committed 0"]


async def test_a_batch_over_the_limit_must_come_again_before_the_ones_after_it() -> None:
    order = Order()
    order.arrive(0)
    order.arrive(2)
    refused: list[BaseException] = []

    async def take(number: int) -> None:
        try:
            async with order.turn(number):
                pass
        except QuotaExceeded as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, 2)  # waits for 0 and 1
        await eventually(lambda: _true(order.waiting == 1))
        order.arrive(1)
        order.refuse(1, QuotaExceeded("over", retry_after=2.0))
    assert [str(exc) for exc in refused] == ["batch 1 was over the limit and must come first: over"]
    with pytest.raises(QuotaExceeded, match="batch 1 was over the limit"):
        order.arrive(3)
    async with order.turn(0):  # the ones before it go on
        pass
    order.arrive(1)  # it comes again, and the ones after it follow
    order.arrive(2)
    async with order.turn(1):
        pass
    async with order.turn(2):
        pass
    assert order.taken == 3
    with pytest.raises(ProtocolError, match="sent twice"):
        order.arrive(2)
    order.close()
    with pytest.raises(ProtocolError, match="the session closed"):
        order.arrive(3)


async def _true(value: bool) -> bool:
    return value
