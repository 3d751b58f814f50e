"""The HTTP surface of documents: GET (JSON, binary, SSE, Braid), PUT, PATCH, DELETE.

Routes parse, authorize and negotiate; the bus does the work; errors are
raised as ``statebus.errors`` and rendered by the one handler table.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hmac
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TypedDict

import mimeparse
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from ..access import ANONYMOUS, OWNER, Access, Reader
from ..bus import Bus, Change, Delete, Event, Patch, PutUpdate, PutValue
from ..errors import (
    InvalidBody,
    InvalidNodeId,
    NotAcceptable,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from ..federation import Federation
from ..identity import Identity, NodeId, parse_node_id
from ..keys import Key, parse_key
from ..quotas import SpeedBumps
from ..settings import Settings
from ..values import parse_object
from ._auth import is_owner
from ._braid import BraidStream, heartbeat_seconds, parents_seq, subscribes
from ._headers import has_header, header
from ._json import JSONResponse, json_answer
from ._sse import EventStream

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
SSE_TYPE = "text/event-stream"
MERGE_PATCH_TYPE = "application/merge-patch+json"
# Order breaks ties for wildcards: a bare `*/*` (curl) gets the stream.
READABLE = [BINARY_TYPE, JSON_TYPE, SSE_TYPE]
LISTING_LIMIT = 1000


class NodeState(TypedDict):
    """What the lifespan hands every request (``request.state``)."""

    settings: Settings
    identity: Identity
    bus: Bus
    federation: Federation
    access: Access
    bumps: SpeedBumps
    owner_token: str
    owner_cookie: str  # the owner cookie's name, per node (_auth.token_cookie)


def node(request: Request) -> NodeState:
    """The node's parts, straight from the scope (``request.state`` wraps the same
    dict in a new object for every request)."""
    state: NodeState = request.scope["state"]
    return state


def _bus(request: Request) -> Bus:
    return node(request)["bus"]


def _version_headers(version: int) -> dict[str, str]:
    return {"Version": f'"{version}"'}


def _key(request: Request) -> Key:
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    return parse_key(raw.decode("latin-1").partition("?")[0], _bus(request).own)


def _bumps(request: Request) -> SpeedBumps:
    return node(request)["bumps"]


StreamWrapper = Callable[[AsyncGenerator[list[Event], None]], AsyncGenerator[list[Event], None]]


def _stream_place(request: Request, reader: Reader) -> StreamWrapper:
    """Take one of a visitor's open-stream places now (429 before the answer
    starts when none is left); the stream gives it back when it ends."""
    if reader.is_owner:
        return lambda events: events
    hold = _bumps(request).stream(_visitor(request))
    hold.__enter__()

    async def held(events: AsyncGenerator[list[Event], None]) -> AsyncGenerator[list[Event], None]:
        try:
            async with aclosing(events) as inner:
                async for batch in inner:
                    yield batch
        finally:
            hold.__exit__(None, None, None)

    return held


def _access(request: Request) -> Access:
    return node(request)["access"]


def _reader(request: Request) -> Reader:
    """Who asks: the owner (token or cookie), or anyone."""
    return OWNER if is_owner(request, node(request)) else ANONYMOUS


def _require_owner(request: Request) -> None:
    if not is_owner(request, node(request)):
        raise NotAuthenticated(
            "writing needs the owner token: send 'Authorization: Bearer <DATA/owner.token>'"
        )


def _visible(request: Request, reader: Reader) -> Callable[[str], bool] | None:
    """The filter of what a reader may see, or None for the owner (who sees it all)."""
    if reader.is_owner:
        return None
    access, bus = _access(request), _bus(request)
    return lambda canonical: access.can_read(reader, canonical) and not bus.is_sealed(canonical)


def _encrypt_to(request: Request) -> frozenset[NodeId] | None:
    """``Encrypt-To: <id>, <id>``: seal the document to these friends (and the owner)."""
    if not has_header(request, b"encrypt-to"):
        return None
    listed = header(request, b"encrypt-to")  # empty: sealed to the owner alone
    try:
        return frozenset(parse_node_id(item) for item in listed.replace(",", " ").split())
    except InvalidNodeId as exc:
        raise InvalidBody(f"Encrypt-To: {exc.detail}") from None


def _visitor(request: Request) -> str:
    """The principal whose speed bumps a visitor's request counts against."""
    return f"visitor {request.client.host if request.client else 'unknown'}"


async def document(request: Request) -> Response | ASGIApp:
    if request.method not in ("GET", "HEAD"):
        return await write(request)
    key = _key(request)
    reader = _reader(request)
    if not reader.is_owner:
        _bumps(request).request(_visitor(request))
    visible = _visible(request, reader)  # a sealed document shows its owner only, here
    if not (key.is_folder or visible is None or visible(key.canonical)):
        raise NotFound(f"{key.display(_bus(request).own)} holds no value you may read")
    return await _read(request, key, reader)


async def write(request: Request) -> Response:
    """PUT, PATCH or DELETE of one document, answered once the write is durable."""
    key = _key(request)
    _require_owner(request)
    change = await _change(request, key)
    bus = _bus(request)
    version = await bus.apply(key, change, origin=_peer(request), encrypt_to=_encrypt_to(request))
    return json_answer({"key": key.display(bus.own), "version": version}, version)


async def _read(request: Request, key: Key, reader: Reader) -> Response | ASGIApp:
    bus = _bus(request)
    visible = _visible(request, reader)
    accept = request.headers.get("accept", "").strip() or "*/*"
    wanted = mimeparse.best_match(READABLE, accept)
    braid = False
    if request.method == "HEAD":
        if wanted == SSE_TYPE:
            wanted = JSON_TYPE
    elif subscribes(request.headers) and not (wanted == SSE_TYPE and SSE_TYPE in accept.lower()):
        braid = True
    if key.namespace != bus.own:  # fetching a foreign key subscribes upstream
        streaming = braid or wanted == SSE_TYPE
        wait = 0.0 if streaming else node(request)["settings"].fetch_wait
        await node(request)["federation"].fetch(key, wait=wait)
    if braid:
        return _braid(request, key, accept, reader)
    if wanted == JSON_TYPE:
        if key.is_folder:
            return await _listing(request, key, visible)
        value, version = await bus.read(key)
        return json_answer(value, version)
    if wanted == BINARY_TYPE:
        if key.is_folder:
            raise NotAcceptable("a folder has no binary state; ask for JSON or an event stream")
        state, version = await bus.state(key, _since(request))
        return Response(state, media_type=BINARY_TYPE, headers=_version_headers(version))
    if wanted == SSE_TYPE:
        after = _last_event_id(request)
        origin = _peer(request)
        place = _stream_place(request, reader)
        return EventStream(
            lambda on_close, direct: place(
                bus.stream(
                    key,
                    after=after,
                    origin=origin,
                    on_close=on_close,
                    visible=visible,
                    direct=direct,
                )
            ),
            {},
        )
    raise NotAcceptable(f"cannot answer with {accept!r}; offered: {', '.join(READABLE)}")


def _braid(request: Request, key: Key, accept: str, reader: Reader) -> ASGIApp:
    """A Braid-HTTP subscription (``Subscribe`` header): JSON snapshots, resumable by Parents."""
    if key.is_folder:
        raise NotAcceptable(
            "a Braid subscription follows one document; "
            "subscribe to a folder with Accept: text/event-stream"
        )
    if mimeparse.quality(JSON_TYPE, accept) <= 0:
        raise NotAcceptable(
            f"a Braid subscription sends {JSON_TYPE} snapshots; for Yjs updates "
            f"subscribe with Accept: {SSE_TYPE} (each event carries its update)"
        )
    parents = parents_seq(request.headers)
    heartbeat = heartbeat_seconds(request.headers)
    place = _stream_place(request, reader)
    bus, origin = _bus(request), _peer(request)
    return BraidStream(
        lambda on_close, _direct: place(
            bus.stream(key, after=parents, origin=origin, heartbeat=heartbeat, on_close=on_close)
        ),
        parents=parents,
        heartbeat=heartbeat,
    )


def _peer(request: Request) -> str | None:
    """The Braid ``Peer`` header: the client's tag for its own writes and subscriptions."""
    return header(request, b"peer") or None


async def _listing(
    request: Request, folder: Key, visible: Callable[[str], bool] | None
) -> Response:
    bus = _bus(request)
    after = request.query_params.get("after", "")
    try:
        limit = min(LISTING_LIMIT, max(1, int(request.query_params.get("limit", LISTING_LIMIT))))
    except ValueError:
        raise InvalidBody("'limit' must be an integer") from None
    infos, following = await bus.listing(folder, after=after, limit=limit, visible=visible)
    return json_answer(
        {
            "folder": folder.display(bus.own),
            "keys": [{"key": info.key, "version": info.head} for info in infos],
            "next": following,
        },
        bus.head,
    )


def _since(request: Request) -> bytes | None:
    since = request.query_params.get("since")
    if since is None:
        return None
    try:
        return base64.urlsafe_b64decode(since + "=" * (-len(since) % 4))
    except (binascii.Error, ValueError):
        raise InvalidBody("'since' must be a base64url-encoded Yjs state vector") from None


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id", "").strip()
    if not value:
        return None
    try:
        seq = int(value)
    except ValueError:
        return None  # an id from elsewhere: start afresh, as for a new reader
    return seq if seq >= 0 else None


async def _change(request: Request, key: Key) -> Change:
    media = _media_type(request)
    if request.method == "DELETE":
        return Delete()
    if has_header(request, b"content-range") or has_header(request, b"patches"):
        raise InvalidBody(
            "range patches (Content-Range, Patches) are not supported: PUT the whole JSON "
            f"value, PATCH a {MERGE_PATCH_TYPE} document, or PUT a Yjs update"
        )
    if request.method == "PUT":
        if media == JSON_TYPE:
            value = parse_object(await _body(request))
            parents = _parents(request)
            if parents is None:
                return PutValue(value)
            return PutValue(value, await _bus(request).value_at(key, parents))
        if media == BINARY_TYPE:
            update = await _body(request)
            if not update:
                raise InvalidBody("the body is empty; send a Yjs v1 update")
            return PutUpdate(update)
        raise UnsupportedMediaType(
            f"PUT takes {JSON_TYPE} (a JSON object) or {BINARY_TYPE} (a Yjs v1 update), "
            f"not {media or 'a body without Content-Type'}"
        )
    if media in (MERGE_PATCH_TYPE, JSON_TYPE):
        return Patch(parse_object(await _body(request), what="the merge patch"))
    raise UnsupportedMediaType(f"PATCH takes {MERGE_PATCH_TYPE}, not {media or 'no Content-Type'}")


def _parents(request: Request) -> int | None:
    """The version a write builds on (Braid's ``Parents: "<version>"``), if named."""
    named = header(request, b"parents").strip()
    if not named:
        return None
    versions = [item.strip().strip('"') for item in named.split(",")]
    if not all(v.isdigit() for v in versions):
        raise InvalidBody(f'Parents must list versions of this node, like "42"; got {named!r}')
    return max(int(v) for v in versions)


def _media_type(request: Request) -> str:
    content_type = header(request, b"content-type")
    media = _parse_media_type(content_type)
    if media is None:
        raise UnsupportedMediaType(f"cannot parse Content-Type {content_type!r}")
    return media


@functools.lru_cache(maxsize=256)
def _parse_media_type(content_type: str) -> str | None:
    """``type/subtype`` of a Content-Type, lowercased; "" for none, None if unparsable.
    Memoized (bounded): clients send the same few headers with every write."""
    if not content_type.strip():
        return ""
    with contextlib.suppress(ValueError, IndexError):
        main, sub, _params = mimeparse.parse_mime_type(content_type)
        return f"{main}/{sub}".lower()
    return None


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit."""
    limit = node(request)["settings"].max_body
    if has_header(request, b"content-length"):
        declared = header(request, b"content-length")
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise InvalidBody("Content-Length is not a number") from None
        if too_big:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes", limit=limit)
    # The ASGI messages themselves: Request.stream()'s async generator costs a
    # small write a tenth of its time on the loop.
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def health(request: Request) -> Response:
    bus = _bus(request)
    return JSONResponse({"ok": True, "node": bus.own, "version": bus.head})


async def login(request: Request) -> Response:
    """Visiting ``/_login?token=...`` (the URL ``serve`` prints) sets the owner cookie."""
    token = request.query_params.get("token", "")
    if not hmac.compare_digest(token.encode(), request.state.owner_token.encode()):
        raise NotAuthenticated("that login link does not carry this node's owner token")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        request.state.owner_cookie, token, httponly=True, samesite="strict", path="/"
    )
    return response
