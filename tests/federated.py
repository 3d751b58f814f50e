"""Helpers for tests with several federated nodes: share lines, polling reads under a
deadline (a condition, never a fixed sleep), and the binary state of every document."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from tests.conftest import Node

FAST = {"peer_backoff": 0.05, "peer_backoff_max": 0.5, "fetch_wait": 0.0}


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
