"""The dialler's end of a peer link: one task per peer, reconnecting with backoff.

A link authenticates (``_auth``), opens ``GET /_fed/stream`` (the dialled node's
frames come down this long-lived answer) and POSTs its own frames to
``/_fed/push``, so every connection goes out from the dialler: a node behind
NAT is a full peer. When the stream ends or fails, the session closes and the
link dials again after a growing, jittered delay.

httpx's exceptions are translated here (:func:`_http_errors`) and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus

from ..errors import PeerAuthFailed, PeerError, PeerUnreachable, ProtocolError, StatebusError
from ..identity import Identity
from ._address import PeerAddress
from ._auth import Dial
from ._hub import Hub
from ._session import Session
from ._wire import FrameReader

log = logging.getLogger(__name__)

PEER_SCHEME = "Peer"


@contextlib.asynccontextmanager
async def _http_errors(peer: str) -> AsyncIterator[None]:
    """httpx's errors stop here and become PeerErrors."""
    try:
        yield
    except httpx.TimeoutException:
        raise PeerUnreachable("the peer stopped answering (timeout)", peer=peer) from None
    except httpx.ConnectError as exc:
        raise PeerUnreachable(f"cannot connect: {exc or 'refused'}", peer=peer) from None
    except httpx.HTTPError as exc:
        raise PeerUnreachable(
            f"the connection failed: {exc or type(exc).__name__}", peer=peer
        ) from None


async def _check(response: httpx.Response, peer: str) -> None:
    if response.is_success:
        return
    await response.aread()
    try:
        body = response.json()
        detail = f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200] or response.reason_phrase
    if response.status_code in (401, 403):
        raise PeerAuthFailed(f"refused us: {detail}", peer=peer)
    if response.status_code == 404:
        raise ProtocolError(f"does not speak statebus federation: {detail}", peer=peer)
    raise PeerUnreachable(f"answered {response.status_code}: {detail}", peer=peer)


def _json(response: httpx.Response, peer: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProtocolError("answered with something that is not JSON", peer=peer) from None


class PeerLink:
    """Keeps one dialled peer connected; a task in the federation's task group."""

    def __init__(
        self,
        hub: Hub,
        identity: Identity,
        address: PeerAddress,
        *,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        heartbeat: float = 15.0,
        queue_limit: int = 8192,
        passive: bool = False,
    ) -> None:
        self.hub = hub
        self.identity = identity
        self.address = address
        self.status = hub.peer(address.node_id)
        self.status.address = str(address)
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._heartbeat = heartbeat
        self._queue_limit = queue_limit
        self._passive = passive
        self._scope: anyio.CancelScope | None = None
        self._peer = str(address)
        self._connected = False

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dial, serve the session, and dial again after a delay; until stopped."""
        with anyio.CancelScope() as self._scope:
            task_status.started()
            delay = self._backoff
            while True:
                try:
                    await self.connect()
                except PeerError as exc:
                    self.status.failed(exc.detail)
                    log.info("link to %s: %s", self._peer, exc.detail)
                except Exception as exc:  # a bug must not take the node down with the link
                    self.status.failed(f"internal error: {exc!r}")
                    log.exception("link to %s failed", self._peer)
                if self._connected:
                    delay = self._backoff
                await anyio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._backoff_max)

    async def connect(self) -> None:
        """One connection: authenticate, run the session until it ends; raises PeerError."""
        self._connected = False
        timeout = httpx.Timeout(10.0, read=self._heartbeat * 3)
        async with (
            _http_errors(self._peer),
            httpx.AsyncClient(base_url=self.address.url, timeout=timeout) as http,
        ):
            token = await self._authenticate(http)
            headers = {"Authorization": f"{PEER_SCHEME} {token}"}
            async with http.stream("GET", "/_fed/stream", headers=headers) as response:
                await _check(response, self._peer)
                session = Session(
                    self.hub,
                    self.address.node_id,
                    self.status,
                    dialler=True,
                    limit=self._queue_limit,
                    passive=self._passive,
                )
                self._connected = True
                log.info("linked to %s", self._peer)
                self.hub.add(session)
                try:
                    await self._serve(http, headers, response, session)
                finally:
                    self.hub.remove(session)

    async def _authenticate(self, http: httpx.AsyncClient) -> str:
        dial = Dial.start(self.identity, self.address.node_id)
        response = await http.post("/_fed/hello", json=dial.hello())
        await _check(response, self._peer)
        proof = dial.proof(_json(response, self._peer))
        response = await http.post("/_fed/auth", json=proof)
        await _check(response, self._peer)
        token = _json(response, self._peer)
        if not isinstance(token, dict) or not isinstance(token.get("session"), str):
            raise ProtocolError("the auth answer has no session", peer=self._peer)
        session: str = token["session"]
        return session

    async def _serve(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        response: httpx.Response,
        session: Session,
    ) -> None:
        failure: list[StatebusError] = []

        async def guarded(work: Callable[[], Any], scope: anyio.CancelScope) -> None:
            try:
                await work()
            except StatebusError as exc:
                failure.append(exc)
            except httpx.HTTPError as exc:
                failure.append(PeerUnreachable(f"the connection failed: {exc}", peer=self._peer))
            scope.cancel()

        async def read() -> None:
            reader = FrameReader()
            async for chunk in response.aiter_raw():
                await session.receive(reader.feed(chunk))
            failure.append(PeerUnreachable("the peer closed the stream", peer=self._peer))

        async def push() -> None:
            while not session.closed:
                chunk = await session.next_chunk()
                if not chunk:
                    return
                answer = await http.post("/_fed/push", content=chunk, headers=headers)
                await _check(answer, self._peer)

        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded, read, tg.cancel_scope)
            tg.start_soon(guarded, push, tg.cancel_scope)
        if failure:
            raise failure[0]
