"""A raw Braid-HTTP subscription reader for tests: it parses the update blocks
byte by byte (the node's framing is what is under test), over httpx streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx


@dataclass
class Block:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def version(self) -> str:
        return self.headers["version"]

    @property
    def parents(self) -> str | None:
        return self.headers.get("parents")

    def json(self) -> Any:
        return json.loads(self.body)


class BraidReader:
    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 209, response.status_code
        self.response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._buffer = b""
        self.blank_lines = 0  # blank lines read since the last block: separator, heartbeats

    async def _more(self) -> None:
        chunk = await anext(self._chunks, None)
        if chunk is None:
            raise EOFError("the subscription ended")
        self._buffer += chunk

    async def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            await self._more()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    async def block(self, within: float = 10) -> Block:
        """The next update block, skipping the blank lines before it."""
        with anyio.fail_after(within):
            line = await self._line()
            while line == b"":
                line = await self._line()
            self.blank_lines = 0
            headers: dict[str, str] = {}
            while line != b"":
                name, sep, value = line.decode().partition(":")
                assert sep, f"not a header line: {line!r}"
                headers[name.strip().lower()] = value.strip()
                line = await self._line()
            length = int(headers["content-length"])
            while len(self._buffer) < length:
                await self._more()
            body, self._buffer = self._buffer[:length], self._buffer[length:]
            return Block(headers, body)

    async def blank_lines_after_block(self, count: int, within: float = 10) -> None:
        """Wait until ``count`` blank lines followed the last block (the body's own
        CRLF ends its last line, the separator adds one, each heartbeat one)."""
        with anyio.fail_after(within):
            while self.blank_lines < count:
                line = await self._line()
                assert line == b"", f"expected a blank line, got {line!r}"
                self.blank_lines += 1


async def subscribe(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[BraidReader, httpx.Response]:
    """Open a Braid subscription; the caller closes the response (``await response.aclose()``)."""
    request = http.build_request("GET", path, headers={"Subscribe": "true", **(headers or {})})
    response = await http.send(request, stream=True)
    return BraidReader(response), response
