"""Helpers for tests with several federated nodes: share lines, polling reads under a
deadline (a condition, never a fixed sleep), and the binary state of every document."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from pycrdt import Doc, Map

from statebus.federation import PUSH_HEADER
from statebus.federation._auth import Dial
from statebus.federation._wire import encode_entries
from statebus.identity import Identity, NodeId, sign_entry
from statebus.store import Entry
from tests.conftest import Node

FAST = {"peer_backoff": 0.05, "peer_backoff_max": 0.5, "fetch_wait": 0.0}


async def publish(node: Node, folder: str = "/", readers: list[str] | None = None) -> None:
    """Share ``folder`` of the node's namespace: with everyone, or with ``readers`` only."""
    rule = {"read": readers if readers is not None else "public"}
    async with node.client() as http:
        response = await http.patch(
            "/_acl", json={folder: rule}, headers={"Content-Type": "application/merge-patch+json"}
        )
    response.raise_for_status()


async def describe(nodes: list[Node]) -> str:
    """Where nodes differ and what their links look like: the message of a failed wait."""
    names = {node.node_id: f"node{i}" for i, node in enumerate(nodes)}
    lines = []
    for namespace, name in names.items():
        held: set[str] = set()
        for node in nodes:
            held |= set(await keys(node, namespace))
        for key in sorted(held):
            values = [await value(node, key) for node in nodes]
            states = [await state(node, key) for node in nodes]
            if len(set(states)) > 1:
                lines.append(f"{name}{key[len(namespace) + 2 :]}: {values}")
    for node in nodes:
        app = node.running.app
        assert app is not None
        for session in app.state.federation.hub.sessions:
            lines.append(
                f"{names[node.node_id]} {session!r}: interests {len(session.interests)}, "
                f"{session.status.as_json()}"
            )
    return "\n".join(lines)


def pin_port(node: Node) -> Node:
    """Make the node bind the same port when restarted, so its peers find it again."""
    node.settings = dataclasses.replace(node.settings, port=node.port)
    return node


def share(node: Node) -> str:
    return f"{node.node_id}@127.0.0.1:{node.port}"


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 15.0) -> None:
    """Wait until ``check()`` is true, polling with a short back-off, for at most ``within``."""
    delay = 0.01
    with anyio.fail_after(within):
        while not await check():
            await anyio.sleep(delay)  # a poll interval, not a wait for an event
            delay = min(delay * 1.5, 0.2)


async def value(node: Node, key: str) -> Any:
    """The JSON value of ``key`` on ``node``, or None when it has none."""
    async with node.client() as http:
        response = await http.get(key, headers={"Accept": "application/json"})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


async def has_value(node: Node, key: str, expected: Any) -> bool:
    return bool(await value(node, key) == expected)


async def state(node: Node, key: str) -> bytes | None:
    """The binary Yjs state of ``key`` on ``node`` (None when never written)."""
    async with node.client() as http:
        response = await http.get(key, headers={"Accept": "application/octet-stream"})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.content


async def keys(node: Node, namespace: str) -> list[str]:
    """Canonical keys of every document of ``namespace`` stored on ``node`` (deleted too)."""
    bus = node.running.bus
    return await bus.documents(f"/~{namespace}/", limit=100_000)


async def put(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> int:
    response = await http.put(key, json=body)
    response.raise_for_status()
    version: int = response.json()["version"]
    return version


class FakePeer:
    """A hand-driven peer with its own key: authenticates to ``node`` and pushes raw frames,
    to check what the node refuses. The node's stream to it is opened and left unread."""

    def __init__(self, node: Node, identity: Identity | None = None) -> None:
        self.node = node
        self.identity = identity or Identity.generate()
        self._stack = contextlib.AsyncExitStack()
        self.http: httpx.AsyncClient | None = None
        self.headers: dict[str, str] = {}
        self.pushed = 0  # pushes taken so far: the number of the next one

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    async def __aenter__(self) -> FakePeer:
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(base_url=self.node.url, timeout=10)
        )
        dial = Dial.start(self.identity, NodeId(self.node.node_id))
        answer = await self.http.post("/_fed/hello", json=dial.hello())
        answer.raise_for_status()
        admitted = await self.http.post("/_fed/auth", json=dial.proof(answer.json()))
        admitted.raise_for_status()
        self.headers = {"Authorization": f"Peer {admitted.json()['session']}"}
        stream = await self._stack.enter_async_context(
            self.http.stream("GET", "/_fed/stream", headers=self.headers)
        )
        assert stream.status_code == 200
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def push(
        self, *entries: Entry, public: bool = False, number: int | None = None
    ) -> httpx.Response:
        """POST entries as the next push of the session (or as push ``number``); a push
        answered 429 keeps its number, as a link's does."""
        assert self.http is not None
        frames = encode_entries(entries, lambda _key: public)
        place = self.pushed if number is None else number
        headers = {**self.headers, PUSH_HEADER: str(place)}
        answer = await self.http.post("/_fed/push", content=frames, headers=headers)
        if number is None and answer.status_code != 429:
            self.pushed += 1
        return answer

    def entry(self, path: str, update: bytes, *, namespace: NodeId | None = None) -> Entry:
        """An entry of ``path`` signed by this peer (in its own namespace by default)."""
        namespace = namespace or self.node_id
        signature = sign_entry(self.identity, namespace, path, update)
        return Entry(f"/~{namespace}{path}", update, self.node_id, signature)


def yjs_update(**fields: Any) -> bytes:
    """A Yjs update that sets ``fields`` in the root map ``data`` of a fresh document."""
    doc: Doc[Any] = Doc()
    data = doc.get("data", type=Map)
    with doc.transaction():
        for name, item in fields.items():
            data[name] = item
    return doc.get_update()
