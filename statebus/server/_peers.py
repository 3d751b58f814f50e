"""The HTTP surface of federation: ``/_peers`` for the owner, ``/_fed/*`` for peers.

``GET /_peers`` lists peers (owner only, like documents until issue 4);
``POST /_peers`` with ``{"peer": "<id>@<host:port>"}`` (a share line) dials a
peer from now on; ``DELETE /_peers/<id>`` stops dialling it.

A dialling peer: ``POST /_fed/hello`` and ``POST /_fed/auth`` (the signed
challenge both ways, see ``federation._auth``) give it a session token;
``GET /_fed/stream`` with ``Authorization: Peer <token>`` is the long-lived
answer that carries this node's frames to it; ``POST /_fed/push`` carries its
frames here.
"""

from __future__ import annotations

import logging

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import (
    InvalidBody,
    InvalidNodeId,
    NotAuthenticated,
    NotFound,
    PeerError,
    ProtocolError,
    StatebusError,
)
from ..federation import PEER_SCHEME, PUSH_HEADER, Federation
from ..federation._session import Session
from ..federation._wire import decode_all
from ..identity import parse_node_id
from ..quotas import peer_principal
from ..store import Entry
from ._json import JSONResponse
from ._routes import _body, _require_owner
from ._sse import _until_disconnect

log = logging.getLogger(__name__)

FRAMES_TYPE = "application/x-statebus-frames"


def _federation(request: Request) -> Federation:
    federation: Federation = request.state.federation
    return federation


async def _json(request: Request) -> object:
    try:
        return orjson.loads(await _body(request))
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc}") from None


def _token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != PEER_SCHEME or not token.strip():
        raise NotAuthenticated(f"peers send 'Authorization: {PEER_SCHEME} <session token>'")
    return token.strip()


async def peers(request: Request) -> Response:
    _require_owner(request)
    federation = _federation(request)
    if request.method == "GET":
        return JSONResponse({"node": federation.own, "peers": federation.peers()})
    body = await _json(request)
    share = body.get("peer") if isinstance(body, dict) else None
    if not isinstance(share, str):
        raise InvalidBody('send {"peer": "<node-id>@<host>:<port>"} (a share line)')
    status = await federation.add_peer(share)
    return JSONResponse({"peer": status.as_json()}, status_code=201)


async def peer(request: Request) -> Response:
    _require_owner(request)
    try:
        node_id = parse_node_id(request.path_params["node"])
    except InvalidNodeId as exc:
        raise NotFound(f"no such peer: {exc.detail}") from None
    if not await _federation(request).remove_peer(node_id):
        raise NotFound(f"this node does not dial {node_id}")
    return JSONResponse({"removed": node_id})


async def hello(request: Request) -> Response:
    return JSONResponse(_federation(request).hello(await _json(request)))


async def auth(request: Request) -> Response:
    return JSONResponse({"session": _federation(request).admit(await _json(request))})


async def stream(request: Request) -> ASGIApp:
    federation = _federation(request)
    token = _token(request)
    session = federation.attach(token)
    idle = request.state.settings.peer_heartbeat
    return PeerStream(federation, token, session, idle)


def _push_number(request: Request) -> int:
    """The push's place in its session (``Statebus-Push: 0``, 1, 2, …): a dialler keeps a
    few in flight, and they are taken in this order whatever order they arrive in."""
    text = request.headers.get(PUSH_HEADER, "")
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ProtocolError(f"a push numbers its place in the session: '{PUSH_HEADER}: <n>'")
    return int(text)


async def push(request: Request) -> Response:
    federation = _federation(request)
    token = _token(request)
    session = federation.session(token)
    limit = 2 * request.state.settings.max_body
    try:
        body = await _body(request)
    except ClientDisconnect:  # the peer went away mid-push: its session ends
        federation.detach(token)
        return Response(status_code=400)
    bumps = request.state.bumps

    async def charge(entries: list[Entry]) -> None:
        # The speed bump: the whole push is charged before any of it is looked at,
        # so a push over the limit is answered 429 and leaves the data as it was.
        bumps.entries(peer_principal(session.peer), entries)

    try:
        number = _push_number(request)
        await session.receive(number, decode_all(body, max_frame=limit), charge)
    except PeerError as exc:
        log.warning("dropping %r: %s", session, exc.detail)
        federation.detach(token)
        raise InvalidBody(f"protocol error: {exc.detail}") from None
    return Response(status_code=204)


class PeerStream:
    """The long-lived answer that carries this node's frames to a peer that dialled it."""

    def __init__(self, federation: Federation, token: str, session: Session, idle: float) -> None:
        self._federation = federation
        self._token = token
        self._session = session
        self._idle = idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", FRAMES_TYPE.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
                await self._write(send)
                tg.cancel_scope.cancel()
        finally:
            self._federation.detach(self._token)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, send: Send) -> None:
        try:
            while True:
                chunk = await self._session.next_chunk(idle=self._idle)
                if not chunk:
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (StatebusError, OSError) as exc:
            log.warning("stream to %r ended: %s", self._session, exc)
