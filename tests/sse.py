"""A raw Server-Sent Events reader for tests: it checks the framing byte by byte
(the node's wire format is what is under test), over an httpx streaming response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx


@dataclass
class SSE:
    id: str | None = None
    event: str = "message"
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SSEReader:
    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.last_id: str | None = None

    async def next(self, within: float = 10) -> SSE:
        """The next event or comment block."""
        event = SSE()
        seen = False
        data: list[str] = []
        with anyio.fail_after(within):
            async for line in self._lines:
                if line == "":
                    if seen:
                        event.data = "\n".join(data)
                        if event.id is not None:
                            self.last_id = event.id
                        return event
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    event.comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event.id = value
                elif name == "event":
                    event.event = value
                elif name == "retry":
                    assert value.isdigit()
                else:
                    raise AssertionError(f"unknown SSE field {name!r}")
        raise EOFError("the stream ended")

    async def data(self, within: float = 10) -> SSE:
        """The next event that carries data (skipping comments and retry blocks)."""
        while True:
            event = await self.next(within)
            if event.data:
                return event


async def open_stream(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[SSEReader, httpx.Response]:
    """Open an event stream; the caller closes the response (``await response.aclose()``)."""
    request = http.build_request("GET", path, headers=headers or {})
    response = await http.send(request, stream=True)
    return SSEReader(response), response
