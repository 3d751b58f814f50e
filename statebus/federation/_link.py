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
import functools
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus

from ..errors import (
    PeerAuthFailed,
    PeerError,
    PeerUnreachable,
    ProtocolError,
    QuotaExceeded,
    StatebusError,
)
from ..identity import Identity
from ..quotas import peer_principal
from ..store import Entry
from ._address import PeerAddress
from ._auth import Dial
from ._hub import Hub
from ._order import PUSHES_IN_FLIGHT
from ._session import Session
from ._wire import Frame, FrameReader

log = logging.getLogger(__name__)

PEER_SCHEME = "Peer"
PUSH_HEADER = "Statebus-Push"  # a push's place in its session: 0, 1, 2, …


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

    async def _within_limits(self, session: Session, entries: list[Entry]) -> None:
        """Entries the peer streams to us wait until its speed bump lets them in
        (the stream is simply read more slowly: TCP pushes back)."""
        if self.hub.bumps is None:
            return
        while True:
            try:
                self.hub.bumps.entries(peer_principal(session.peer), entries)
                return
            except QuotaExceeded as exc:
                self.status.failed(
                    f"sends past its limit: reading again in {exc.retry_after:.1f} s"
                )
                await anyio.sleep(min(exc.retry_after, 60.0))

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

        async def guarded(work: Callable[[], Awaitable[None]], *, ends: bool = True) -> None:
            """Run one part of the session: its failure ends the session, and so does its
            end when ``ends`` (the stream's reader, the pusher; not one batch of theirs)."""
            try:
                await work()
                if not ends:
                    return
            except StatebusError as exc:
                failure.append(exc)
            except httpx.HTTPError as exc:
                failure.append(PeerUnreachable(f"the connection failed: {exc}", peer=self._peer))
            tg.cancel_scope.cancel()

        async def take(number: int, frames: list[Frame], slot: anyio.Semaphore) -> None:
            try:
                admit = functools.partial(self._within_limits, session)
                await session.receive(number, frames, admit)
            finally:
                slot.release()

        async def read() -> None:
            # A few chunks at a time, taken in order: the next is checked while one commits.
            reader = FrameReader()
            slots = anyio.Semaphore(PUSHES_IN_FLIGHT)
            number = 0
            async with anyio.create_task_group() as chunks:
                async for raw in response.aiter_raw():
                    frames = reader.feed(raw)
                    if not frames:
                        continue
                    await slots.acquire()
                    chunks.start_soon(
                        functools.partial(guarded, ends=False),
                        functools.partial(take, number, frames, slots),
                    )
                    number += 1
            failure.append(PeerUnreachable("the peer closed the stream", peer=self._peer))

        async def post(number: int, chunk: bytes, slot: anyio.Semaphore) -> None:
            try:
                numbered = {**headers, PUSH_HEADER: str(number)}
                while True:
                    answer = await http.post("/_fed/push", content=chunk, headers=numbered)
                    if answer.status_code != 429:
                        break
                    # Over the peer's speed bump: nothing was stored; wait and push again
                    # (the pushes after it are refused until it is in).
                    wait = float(answer.headers.get("retry-after", "1"))
                    self.status.failed(f"over its limit (429): pushing again in {wait:g} s")
                    await anyio.sleep(min(max(wait, 0.1), 60.0))
                await _check(answer, self._peer)
            finally:
                slot.release()

        async def push() -> None:
            # A few pushes in flight, numbered: the peer takes them in order, answers
            # each once durable, and checks the next while one commits.
            slots = anyio.Semaphore(PUSHES_IN_FLIGHT)
            async with anyio.create_task_group() as posts:
                for number in itertools.count():
                    await slots.acquire()
                    chunk = b"" if session.closed else await session.next_chunk()
                    if not chunk:
                        return
                    posts.start_soon(
                        functools.partial(guarded, ends=False),
                        functools.partial(post, number, chunk, slots),
                    )

        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded, read)
            tg.start_soon(guarded, push)
        if failure:
            raise failure[0]
