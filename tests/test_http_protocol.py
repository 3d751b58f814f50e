"""The node's HTTP protocol (uvicorn's, with a head written together with its body),
served by a real uvicorn on 127.0.0.1 and read from a raw socket, so what is on the
wire is what the test sees."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import uvicorn
from anyio.abc import SocketStream

from statebus.runner import bind
from statebus.server._http import HttpProtocol

Scope = dict[str, object]


class App:
    """Answers /small at once; on /later sends its head, then waits for the test to
    have read that head before it sends the body (so a held head would hang)."""

    def __init__(self) -> None:
        self.head_read = anyio.Event()

    async def __call__(self, scope: Scope, receive: object, send: object) -> None:
        assert callable(send)
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/plain")]
        if scope["path"] == "/later":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await self.head_read.wait()
            await send({"type": "http.response.body", "body": b"later", "more_body": False})
            return
        body = b"small answer"
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, int]]:
    app = App()
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        app, http=HttpProtocol, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])  # listening already: connections queue
        yield app, sock.getsockname()[1]
        app.head_read.set()  # nothing left waiting if a test failed halfway
        server.should_exit = True


async def read_until(stream: SocketStream, marker: bytes) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while marker not in data:
            data += await stream.receive()
    return data


async def test_head_and_body_arrive_as_one_answer(served: tuple[App, int]) -> None:
    _app, port = served
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for _ in range(3):  # keep-alive: each answer whole, in order
            await stream.send(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await read_until(stream, b"small answer")
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"content-length: 12" in head
            assert body == b"small answer"


async def test_a_head_whose_body_comes_later_is_not_held_back(served: tuple[App, int]) -> None:
    app, port = served
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_until(stream, b"\r\n\r\n")  # before the app sends any body
        assert head.startswith(b"HTTP/1.1 200 OK")
        app.head_read.set()
        rest = await read_until(stream, b"0\r\n\r\n")
        assert b"later" in head + rest


async def test_a_head_request_gets_its_head(served: tuple[App, int]) -> None:
    _app, port = served
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_until(stream, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
