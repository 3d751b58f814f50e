"""Bare Starlette write endpoints: the ceiling a statebus write is compared with.

`PUT|PATCH /204/{key}` reads the body and answers 204. `PUT /apply/{key}`
applies the body, a Yjs v1 update, to one in-memory pycrdt Doc and answers
204: the same ceiling plus the CRDT work, without storage. Run under uvicorn
with `--factory` (no app exists at import time).
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app() -> Starlette:
    doc: Doc[Any] = Doc()
    doc["data"] = Map()

    async def put_204(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async def put_apply(request: Request) -> Response:
        doc.apply_update(await request.body())
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/_health", health),
            Route("/204/{key:path}", put_204, methods=["PUT", "PATCH"]),
            Route("/apply/{key:path}", put_apply, methods=["PUT"]),
        ]
    )
