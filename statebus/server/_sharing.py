"""``/_acl``: the owner reads and edits the node's sharing rules (see statebus.access).

The rules are a document like any other (durable, versioned, streamable), kept
outside every namespace's keys; every write is validated whole before it is
applied, and the node's :class:`~statebus.access.Access` follows it at once.
"""

from __future__ import annotations

from typing import Any

import mimeparse
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from ..access import acl_key, parse_rules
from ..bus import Patch, PutValue
from ..errors import NotAcceptable, NotFound, UnsupportedMediaType
from ..values import merge_patch, parse_object
from ._json import json_answer
from ._routes import (
    JSON_TYPE,
    MERGE_PATCH_TYPE,
    SSE_TYPE,
    _access,
    _body,
    _bus,
    _media_type,
    _require_owner,
)
from ._sse import EventStream


async def current_rules(request: Request) -> tuple[dict[str, Any], int]:
    bus = _bus(request)
    try:
        return await bus.read(acl_key(bus.own))
    except NotFound:
        return {}, 0


async def acl(request: Request) -> Response | ASGIApp:
    _require_owner(request)
    bus = _bus(request)
    key = acl_key(bus.own)
    if request.method == "GET":
        accept = request.headers.get("accept", "").strip() or "*/*"
        wanted = mimeparse.best_match([JSON_TYPE, SSE_TYPE], accept)
        if wanted == JSON_TYPE:
            rules, version = await current_rules(request)
            return json_answer(rules, version)
        if wanted == SSE_TYPE:
            return EventStream(
                lambda on_close, direct: bus.stream(key, on_close=on_close, direct=direct), {}
            )
        raise NotAcceptable(f"/_acl answers {JSON_TYPE} or {SSE_TYPE}")
    media = _media_type(request)
    if request.method == "PUT" and media == JSON_TYPE:
        rules = parse_object(await _body(request), what="the sharing rules")
        parse_rules(rules, bus.own)
        change: PutValue | Patch = PutValue(rules)
    elif request.method == "PATCH" and media in (MERGE_PATCH_TYPE, JSON_TYPE):
        patch = parse_object(await _body(request), what="the merge patch")
        current, _ = await current_rules(request)
        parse_rules(merge_patch(current, patch), bus.own)
        change = Patch(patch)
    else:
        raise UnsupportedMediaType(
            f"PUT /_acl takes {JSON_TYPE}; PATCH /_acl takes {MERGE_PATCH_TYPE}"
        )
    version = await bus.apply(key, change)
    rules, _ = await current_rules(request)
    _access(request).update(rules)
    return json_answer({"key": "/_acl", "version": version}, version)
