"""Braid-HTTP subscriptions: the answer to ``GET /key`` with a ``Subscribe`` header.

The answer is status 209 and, for as long as both sides stay, one update
block per version of the key, in the framing the ``braid-http`` client parses::

    Version: "42"
    Parents: "41"
    Content-Type: application/json
    Content-Length: 27

    {"name": "Ada", "bio": "x"}

Each body is a snapshot, the key's whole JSON value at that version (``null``
while the key holds none), so a client needs no patch format: braid-http hands
it over as ``update.body`` / ``update.body_text``. (Yjs clients that want the
CRDT updates themselves subscribe over SSE, whose events carry them.) Versions
are the node's sequence numbers, as in the ``Version`` header of every write.
The first block of a fresh subscription has no ``Parents``; every later block
names the version this stream sent before it, and a client that reconnects
with ``Parents: "41"`` gets only what came after 41, the first of it naming
``Parents: "41"``. (If 41 is unknown here, or compacted away, it gets the
whole value again, without ``Parents``.)

A heartbeat is a blank line (CRLF), which the client's parser skips. The bus
ticker sends them to every stream; a client that asks (``Heartbeats: 5s``)
also gets one after that many idle seconds, and the answer's ``Heartbeats``
header says so. Each event's block after the ``Version``/``Parents`` lines is
encoded once (``Event.encoded``) and shared by every Braid subscriber.
"""

from __future__ import annotations

import math

import orjson
from starlette.datastructures import Headers

from ..bus import Event, Kind
from ._sse import EventStream, Subscribe

SUBSCRIBE_VALUES = frozenset({"", "?1", "true"})
MIN_HEARTBEAT = 1.0
MAX_HEARTBEAT = 3600.0
BLANK = b"\r\n"


def subscribes(headers: Headers) -> bool:
    """Whether a request asks for a Braid subscription (``Subscribe: ?1``, ``true`` or empty)."""
    value = headers.get("subscribe")
    return value is not None and value.strip().lower() in SUBSCRIBE_VALUES


def parents_seq(headers: Headers) -> int | None:
    """The newest of the ``Parents`` versions that this node wrote, or None (start afresh)."""
    value = headers.get("parents", "")
    seqs = []
    for item in value.split(","):
        version = item.strip().strip('"')
        if version.isdigit():
            seqs.append(int(version))
    return max(seqs) if seqs else None


def heartbeat_seconds(headers: Headers) -> float | None:
    """The heartbeat interval asked for (``Heartbeats: 5s``), bounded; None if not asked."""
    value = headers.get("heartbeats", "").strip().lower().removesuffix("s")
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_HEARTBEAT, max(MIN_HEARTBEAT, seconds))


def encode_block(event: Event) -> bytes:
    """An update block after its Version/Parents lines: the snapshot body, framed."""
    body = orjson.dumps(event.value)
    return b"".join(
        [
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
            b"\r\n\r\n",
        ]
    )


class BraidStream(EventStream):
    """A bus subscription as Braid-HTTP update blocks; one per subscriber, holding
    only the version it sent last (the next block's ``Parents``)."""

    status = 209
    shared_encoding = False  # each block names the version this stream sent before

    def __init__(
        self,
        subscribe: Subscribe,
        *,
        parents: int | None,
        heartbeat: float | None,
    ) -> None:
        headers = {"Subscribe": "true"}
        if heartbeat is not None:
            headers["Heartbeats"] = f"{heartbeat:g}s"
        super().__init__(subscribe, headers)
        self._parents = parents
        self._sent = False

    def start_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"cache-control", b"no-store"), (b"x-accel-buffering", b"no"), *self._headers]

    def preamble(self) -> bytes:
        return b""

    def encode(self, batch: list[Event]) -> bytes:
        parts: list[bytes] = []
        for event in batch:
            if event.kind == Kind.HEARTBEAT:
                parts.append(BLANK)
                continue
            if self._parents is None or (event.kind == Kind.STATE and not self._sent):
                # A fresh start: the whole value, descending from nothing the client named
                # (no Parents asked, or ones this node cannot resume from).
                parts.append(b'Version: "%d"\r\n' % event.seq)
            else:
                parts.append(b'Version: "%d"\r\nParents: "%d"\r\n' % (event.seq, self._parents))
            parts.append(event.encoded("braid", encode_block))
            self._parents = event.seq
            self._sent = True
        return b"".join(parts)
