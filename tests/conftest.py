"""Shared fixtures: real statebus nodes on 127.0.0.1, made by a factory that
closes everything it made. Every coroutine test runs under anyio (asyncio)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.runner import NodeServer
from statebus.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Node:
    """A real node on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: NodeServer | None = None

    async def start(self) -> Node:
        server = NodeServer(self.settings, log_level="warning")
        await server.__aenter__()
        self.server = server
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.__aexit__(None, None, None)

    @property
    def running(self) -> NodeServer:
        assert self.server is not None, "the node is stopped"
        return self.server

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def token(self) -> str:
        return self.running.owner_token

    @property
    def node_id(self) -> str:
        identity = self.running.identity
        assert identity is not None
        return identity.node_id

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def client(self, *, owner: bool = True, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if owner else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    made: list[Node] = []

    async def make(name: str = "node", **overrides: Any) -> Node:
        settings = Settings(data_dir=tmp_path / name, port=0, **overrides)
        node = Node(settings)
        made.append(node)
        return await node.start()

    try:
        yield make
    finally:
        for node in reversed(made):
            await node.stop()


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with node.client() as http:
        yield http
