"""Bare sse-starlette fan-out: one EventSourceResponse and one queue per subscriber.

`GET /{key}` subscribes (first event `data: null`, as statebus sends for a key
never written); `PUT /{key}` broadcasts its body as one event to every
subscriber of that key and answers 204. This is sse-starlette used the plain
way, the per-connection machinery statebus is measured against.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

QUEUE_LIMIT = 10_000  # a subscriber this far behind loses events, the server keeps its memory


def create_app() -> Starlette:
    subscribers: dict[str, set[asyncio.Queue[str]]] = {}

    async def subscribe(request: Request) -> EventSourceResponse:
        key = request.path_params["key"]
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        subscribers.setdefault(key, set()).add(queue)

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                yield {"data": "null"}
                while True:
                    yield {"data": await queue.get()}
            finally:
                subscribers[key].discard(queue)

        return EventSourceResponse(events(), ping=15)

    async def publish(request: Request) -> Response:
        data = (await request.body()).decode()
        for queue in subscribers.get(request.path_params["key"], ()):
            if not queue.full():
                queue.put_nowait(data)
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/_health", health),
            Route("/{key:path}", subscribe, methods=["GET"]),
            Route("/{key:path}", publish, methods=["PUT"]),
        ]
    )
