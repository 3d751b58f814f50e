"""Shared fixtures: real statebus nodes on 127.0.0.1, made by a factory that
closes everything it made. Every coroutine test runs under anyio (asyncio)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup

from statebus.runner import NodeServer
from statebus.settings import Settings


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Mark every coroutine test for anyio before anyio's own collector looks."""
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    """uvloop, as a node runs (uvicorn's "auto" loop): its transports differ from
    asyncio's where it matters, e.g. writing to a closed pipe raises."""
    return "asyncio", {"use_uvloop": True}


class Node:
    """A real node on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, settings: Settings, tg: TaskGroup) -> None:
        self.settings = settings
        self._tg = tg
        self.server: NodeServer | None = None

    async def start(self) -> Node:
        server = NodeServer(self.settings, log_level="warning")
        await self._tg.start(server.run)
        self.server = server
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            await server.stopped.wait()

    @property
    def running(self) -> NodeServer:
        assert self.server is not None, "the node is stopped"
        return self.server

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

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
    async with anyio.create_task_group() as tg:

        async def make(name: str = "node", **overrides: Any) -> Node:
            settings = Settings(data_dir=tmp_path / name, port=0, **overrides)
            node = Node(settings, tg)
            made.append(node)
            return await node.start()

        try:
            yield make
        finally:
            with anyio.fail_after(30):
                for node in reversed(made):
                    await node.stop()


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with node.client() as http:
        yield http
