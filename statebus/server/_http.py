"""uvicorn's httptools protocol, writing an answer's head together with its body.

uvicorn writes the status line and headers in one transport write and the body
in the next: two ``send()`` system calls for every small answer where one would
do, and on loopback each one also runs the receiving side's TCP work. Under the
durable-write benchmark that second call was about 5% of the loop's time.

Each connection's transport is wrapped so that a head is held until the write
that follows it in the same loop iteration, and both go out in one
``writelines`` (uvloop makes that one ``writev``). If no write follows (a stream
whose first event comes later, a ``HEAD``), the head goes out alone at the end
of the iteration, so nothing waits longer than before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadWithBody:
    """An ``asyncio.Transport`` seen through: ``write`` holds a response head for the
    next write; everything else is the wrapped transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head on its own (its body did not follow in this iteration)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """What the node's uvicorn speaks (``uvicorn.Config(http=HttpProtocol)``)."""

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        wrapped: Any = HeadWithBody(transport, self.loop)
        super().connection_made(wrapped)
