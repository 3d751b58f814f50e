"""Server-Sent Events: the default answer to ``GET /key``.

Each event is encoded once (``Event.encoded`` caches the bytes, with
sse-starlette's ``ServerSentEvent`` doing the framing) and every batch a
subscriber has waiting goes out in one write. Per connection there is one task
writing and one waiting for the client to leave; no timers (the bus sends
heartbeats to every subscriber from one ticker) and no per-event allocation
beyond the join.

::

    id: 42
    data: {"key": "/profile", "value": {...}, "update": "<base64>", "version": 42}

A folder stream opens with one event per key (no ``id``) and an
``event: synced`` whose ``id`` is where the listing stands; a heartbeat is the
comment ``: heartbeat``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import orjson
from anyio import CancelScope
from sse_starlette import ServerSentEvent
from starlette.types import Receive, Scope, Send

from ..bus import Event, Kind

log = logging.getLogger(__name__)
Subscribe = Callable[
    [Callable[[], None], Callable[[list[Event]], bool] | None], AsyncGenerator[list[Event], None]
]  # (the callback that ends the answer, a direct writer or None) -> the event batches
RAW_SEND = "statebus.raw_send"
RETRY_MS = 2000


def event_json(event: Event) -> bytes:
    return orjson.dumps(
        {
            "key": event.key,
            "value": event.value,
            "update": base64.b64encode(event.update).decode(),
            "version": event.seq,
        }
    )


def encode_sse(event: Event) -> bytes:
    if event.kind == Kind.HEARTBEAT:
        return ServerSentEvent(comment="heartbeat").encode()
    if event.kind == Kind.SYNCED:
        data = orjson.dumps({"key": event.key, "version": event.seq}).decode()
        return ServerSentEvent(data, event="synced", id=str(event.seq)).encode()
    data = event_json(event).decode()
    if event.kind == Kind.LISTED:
        return ServerSentEvent(data).encode()
    return ServerSentEvent(data, id=str(event.seq)).encode()


def sse(event: Event) -> bytes:
    return event.encoded("sse", encode_sse)


class EventStream:
    """An ASGI response that streams a bus subscription as SSE until either side ends.

    The framing hooks (``status``, ``start_headers``, ``preamble``, ``encode``)
    are what another wire format (Braid-HTTP, ``_braid.py``) overrides.
    """

    status = 200
    media_type = b"text/event-stream; charset=utf-8"
    shared_encoding = True  # every reader gets the same bytes per event (Braid's differ)

    def __init__(self, subscribe: Subscribe, headers: dict[str, str]) -> None:
        self._subscribe = subscribe  # called with the callback that ends this response
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    def start_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", self.media_type),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
            *self._headers,
        ]

    def preamble(self) -> bytes:
        return ServerSentEvent(retry=RETRY_MS).encode()

    def encode(self, batch: list[Event]) -> bytes:
        if len(batch) == 1:
            return sse(batch[0])
        return b"".join([sse(event) for event in batch])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.start_headers()}
        )
        # Once the answer has started through the app's middleware, its body goes to
        # the server's own send (``Front`` put it in the scope): no wrapper per event.
        send = scope.get(RAW_SEND, send)
        preamble = self.preamble()
        if preamble:
            await send({"type": "http.response.body", "body": preamble, "more_body": True})
        direct = _direct_writer(send) if self.shared_encoding else None
        with CancelScope() as ending:
            # One plain task per stream watches for the client leaving: an anyio task
            # group here would cost several KiB per idle subscriber (handles, events).
            watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive, ending))
            watcher.add_done_callback(_retrieve)
            try:
                async with aclosing(self._subscribe(ending.cancel, direct)) as batches:
                    async for batch in batches:
                        body = self.encode(batch)
                        del batch  # an idle stream must not keep its last (maybe whole-state) batch
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        del body
            finally:
                watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _chunk(event: Event) -> bytes:
    body = sse(event)
    return b"%x\r\n%b\r\n" % (len(body), body)


def _direct_writer(send: Send) -> Callable[[list[Event]], bool] | None:
    """A writer that puts an event on the wire at once, from the publisher, without
    waking the stream's task (see ``bus.Subscriber``); None where it cannot be had.

    It needs uvicorn's httptools protocol (the server's own ``send``, which ``Front``
    handed over, bound to its request cycle) answering in chunked encoding; it
    frames the chunk exactly as that ``send`` would, once per event for every
    reader, and declines (the event then takes the queued path) while the
    transport is paused or the client gone.
    """
    cycle: Any = getattr(send, "__self__", None)
    flow: Any = getattr(cycle, "flow", None)
    transport: Any = getattr(cycle, "transport", None)
    if (
        getattr(cycle, "chunked_encoding", None) is not True
        or not hasattr(flow, "write_paused")
        or not hasattr(transport, "is_closing")
        or not hasattr(cycle, "disconnected")
    ):
        return None

    def write(events: list[Event]) -> bool:
        if cycle.disconnected or flow.write_paused or transport.is_closing():
            return False
        if len(events) == 1:
            transport.write(events[0].encoded("sse-chunk", _chunk))
        else:
            transport.write(b"".join([event.encoded("sse-chunk", _chunk) for event in events]))
        return True

    return write


async def _until_disconnect(receive: Receive, ending: CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    ending.cancel()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("watching a stream's client failed: %r", task.exception())
