"""One authenticated connection with a peer, the same on both ends.

Frames out come from :meth:`Session.next_chunk`: the dialled node writes them
to its long-lived stream answer, the dialler POSTs them. Frames in go to
:meth:`Session.receive`. Control messages (``t`` field):

==============  =====  ==========================================================
``want``        key    the sender wants this key or folder: sync it, then stream it
``digest``      docs   ``[[key, snapshot|null], ...]`` the sender holds under it
``digest-end``         the digest is complete: the receiver answers
``need``        docs   the receiver of a digest lacks something of these documents
``caught-up``          every entry the wanting side lacked has been sent
``filled``             every entry named by ``need`` has been sent
``public``      docs   these documents' owner lets anyone read them: they may be relayed
``ping``               keeps an idle stream alive
==============  =====  ==========================================================

Outbound work is one queue of jobs (catch-up, see ``_sync``) and one bounded
queue of live entries filled by the hub; a peer that falls more than
``limit`` entries behind is resynchronised by wanting every interest again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from ..coverage import EMPTY, Digest
from ..errors import BadSignature, InvalidKey, ProtocolError, QuotaExceeded
from ..grants import Grant
from ..identity import NodeId
from ..keys import folders_of, parse_canonical
from ..store import Entry
from . import _sync
from ._order import Order
from ._status import PeerStatus
from ._wire import Carried, Control, Frame, encode_control, encode_entries

if TYPE_CHECKING:
    from ..bus import Bus, Checked
    from ._hub import Hub

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
LIVE_BATCH = 512
MAX_JOBS = 10_000
MAX_DIGEST_DOCS = 200_000
PING = encode_control("ping")


class Session:
    """Owned by the hub from authentication until either side closes it."""

    def __init__(
        self,
        hub: Hub,
        peer: NodeId,
        status: PeerStatus,
        *,
        dialler: bool,
        limit: int = 8192,
        passive: bool = False,
    ) -> None:
        self.hub = hub
        self.bus: Bus = hub.bus
        self.peer = peer
        self.status = status
        self.dialler = dialler
        self.passive = passive  # recovery: take what is sent, serve nothing
        self.interests: set[str] = set()
        self.closed = False
        self._limit = limit
        self._live: deque[Entry] = deque()
        self._behind = False
        self._jobs: deque[AsyncGenerator[bytes, None]] = deque()
        self._job: AsyncGenerator[bytes, None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._digests: dict[str, dict[str, Digest]] = {}
        self._needs: dict[str, dict[str, Digest]] = {}
        self._collected = 0
        self._wanting: set[str] = set()
        self._order = Order()  # the peer's batches, each in its turn

    def __repr__(self) -> str:
        side = "to" if self.dialler else "from"
        return f"Session({side} {self.peer[:12]}…)"

    @property
    def pushes_taken(self) -> int:
        """The peer's batches taken in so far, in order."""
        return self._order.taken

    @property
    def pushes_waiting(self) -> int:
        """The peer's batches that arrived ahead of their turn."""
        return self._order.waiting

    def may_read(self, key: str) -> bool:
        return self.hub.policy.can_read(self.peer, key)

    def covers(self, key: str) -> bool:
        """Whether an interest of this session already includes ``key``."""
        return key in self.interests or any(f in self.interests for f in folders_of(key))

    # -- outbound ----------------------------------------------------------

    def want(self, key: str) -> None:
        """Ask the peer for a key or folder (catch-up, then live, both ways)."""
        if self.closed or (self.passive and key != f"/~{self.bus.own}/"):
            return
        self.hub.add_interest(self, key)
        if key not in self._wanting:  # one catch-up of a key waiting at a time is enough
            self._wanting.add(key)
            self._schedule(self._want(key))

    async def _want(self, key: str) -> AsyncGenerator[bytes, None]:
        self._wanting.discard(key)
        async for chunk in _sync.want(self, key):
            yield chunk

    def interests_covering(self, key: str) -> list[str]:
        return [name for name in (key, *folders_of(key)) if name in self.interests]

    def offer(self, entry: Entry) -> None:
        """Queue a committed entry for the peer; never blocks (the hub calls it)."""
        if self.closed or self._behind:
            return
        if len(self._live) >= self._limit:
            log.info("%r fell %d entries behind: resynchronising", self, self._limit)
            self._live.clear()
            self._behind = True
        else:
            self._live.append(entry)
        self._wake()

    def _schedule(self, job: AsyncGenerator[bytes, None]) -> None:
        if len(self._jobs) >= MAX_JOBS:
            raise ProtocolError(f"more than {MAX_JOBS} requests waiting", peer=self.peer)
        self._jobs.append(job)
        self._wake()

    async def next_chunk(self, *, idle: float | None = None) -> bytes:
        """The next frames to send (about ``CHUNK_BYTES``); a ping after ``idle`` seconds
        with nothing to send; ``b""`` once the session is closed."""
        out = bytearray()
        while len(out) < CHUNK_BYTES and not self.closed:
            if self._behind:
                self._behind = False
                for key in sorted(self.interests):
                    self.want(key)
            if self._job is None and self._jobs:
                self._job = self._jobs.popleft()
            if self._job is not None:
                try:
                    out += await anext(self._job)
                except StopAsyncIteration:
                    self._job = None
                continue
            if self._live:
                count = min(len(self._live), LIVE_BATCH)
                batch = [self._live.popleft() for _ in range(count)]
                self.status.entries_out += count
                out += encode_entries(batch, self.hub.policy.is_public)
                continue
            if out:
                break
            if not await self._wait(idle):
                return PING
        if self.closed and self._job is not None:
            job, self._job = self._job, None
            await job.aclose()
        return bytes(out)

    async def _wait(self, idle: float | None) -> bool:
        """Wait for work; False if ``idle`` seconds passed without any."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if idle is None:
                await self._waiter
                return True
            with anyio.move_on_after(idle):
                await self._waiter
                return True
            return False
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._live.clear()
            self._jobs.clear()
            self._order.close()
            self._wake()

    # -- inbound -----------------------------------------------------------

    async def receive(
        self,
        number: int,
        frames: list[Frame],
        admit: Callable[[list[Entry]], Awaitable[None]] | None = None,
    ) -> None:
        """Handle the peer's batch ``number`` (0, 1, 2, … in this session), after every
        earlier one and while the one before commits (``_order``): its frames in order,
        entries to the bus and control to the protocol. Returns once its entries are
        durable. ``admit`` charges its entries against the peer's speed bump first (a
        :class:`QuotaExceeded` from it refuses this batch and the ones after it).

        Once admitted, its signatures are verified while it waits for its turn."""
        self._order.arrive(number)
        try:
            if admit is not None:
                await admit([frame.entry for frame in frames if isinstance(frame, Carried)])
        except QuotaExceeded as exc:
            self._order.refuse(number, exc)
            raise
        except BaseException:
            self._order.leave(number)
            raise
        runs = _runs(frames)
        checks = [
            self.bus.check([frame.entry for frame in run]) if isinstance(run, list) else None
            for run in runs
        ]
        try:
            async with self._order.turn(number) as staged:
                published = await self._take(runs, checks, staged)
        finally:
            for checked in checks:
                if checked is not None:
                    checked.cancel()  # the session closed before its turn: stop verifying
        if published:
            self.hub.published(self, published)

    async def _take(
        self,
        runs: list[list[Carried] | Control],
        checks: list[Checked | None],
        staged: Callable[[], None],
    ) -> list[str]:
        """Act on runs of entries and control messages in order; the turn passes on once
        the last entries are staged (a control message after them waits for their commit,
        as the ones before do)."""
        published: list[str] = []
        for at, (run, checked) in enumerate(zip(runs, checks, strict=True)):
            if checked is None:
                assert isinstance(run, Control)
                published.extend(self._control(run))
                continue
            assert isinstance(run, list)
            for frame in run:
                if self.hub.policy.learn(frame.entry.key, frame.public):
                    published.append(frame.entry.key)
            last = at == len(runs) - 1
            await self.hub.accept(self, checked, staged=staged if last else None)
        return published

    def _control(self, frame: Control) -> list[str]:
        """Act on a control message; return the keys it says became public."""
        kind, body = frame.type, frame.body
        if kind == "ping":
            return []
        if kind == "grants":  # about the peer's whole namespace, not one interest
            self._take_grants(body.get("grants"))
            return []
        key = _interest(body.get("key"))
        if self.passive and kind in ("want", "digest", "digest-end"):
            if kind == "want":  # recovery serves nothing
                self._schedule(_done(key))
            return []
        if kind == "want":
            self.hub.add_interest(self, key)
            self._collected -= len(self._digests.get(key, {}))
            self._digests[key] = {}
            self.hub.relay(self, key)
        elif kind == "digest":
            self._collect(self._digests, key, body.get("docs"))
        elif kind == "digest-end":
            theirs = self._digests.pop(key, {})
            self._collected -= len(theirs)
            self._schedule(_sync.answer(self, key, theirs))
        elif kind == "need":
            self._collect(self._needs, key, body.get("docs"), create=True)
        elif kind == "caught-up":
            needs = self._needs.pop(key, {})
            self._collected -= len(needs)
            self.status.last_sync = time.time()
            self.hub.caught_up(key)
            if needs and not self.passive:
                self._schedule(_sync.fill(self, key, needs))
        elif kind == "filled":
            self.status.last_sync = time.time()
        elif kind == "public":
            return [doc for doc in _keys(body.get("docs"), key) if self.hub.policy.learn(doc, True)]
        else:
            log.debug("%r sent an unknown control message %r", self, kind)
        return []

    def send_grants(self) -> None:
        """Tell the peer what this node's owner lets it write (its signed grants)."""
        if self.passive:
            return
        grants = [
            {"path": grant.path, "sig": base64.b64encode(grant.signature).decode()}
            for grant in self.hub.issue(self.peer)
        ]
        self._schedule(_control("grants", grants=grants))

    def _take_grants(self, raw: Any) -> None:
        """Keep what the peer's owner lets this node write, once its signatures check out."""
        if self.hub.held is None:
            return
        if not isinstance(raw, list):
            raise ProtocolError("'grants' must be a list", peer=self.peer)
        grants = []
        for item in raw:
            try:
                grant = Grant(str(item["path"]), base64.b64decode(item["sig"], validate=True))
                grant.verify(self.peer, self.hub.own)
            except (KeyError, TypeError, ValueError, BadSignature) as exc:
                raise ProtocolError(f"a bad grant: {exc}", peer=self.peer) from None
            grants.append(grant)
        self.hub.held.replace(self.peer, grants)

    def _collect(
        self, into: dict[str, dict[str, Digest]], key: str, docs: Any, *, create: bool = False
    ) -> None:
        if key not in into:
            if not create:
                raise ProtocolError(f"'digest' for {key} without 'want'", peer=self.peer)
            into[key] = {}
        if not isinstance(docs, list):
            raise ProtocolError("'docs' must be a list", peer=self.peer)
        self._collected += len(docs)
        if self._collected > MAX_DIGEST_DOCS:
            raise ProtocolError(f"over {MAX_DIGEST_DOCS} documents described", peer=self.peer)
        target = into[key]
        for item in docs:
            doc, digest = _document(item, key)
            target[doc] = digest


def _runs(frames: list[Frame]) -> list[list[Carried] | Control]:
    """Frames with each run of consecutive entries together: the bus takes a run at once."""
    runs: list[list[Carried] | Control] = []
    for frame in frames:
        if isinstance(frame, Control):
            runs.append(frame)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def _interest(value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError("a control message without a 'key'")
    try:
        return parse_canonical(value).canonical
    except InvalidKey as exc:
        raise ProtocolError(f"bad key in a control message: {exc.detail}") from None


def _inside(key: str, interest: str) -> bool:
    inside = key == interest or (interest.endswith("/") and key.startswith(interest))
    return inside and not key.endswith("/")


def _keys(docs: Any, interest: str) -> list[str]:
    if not isinstance(docs, list) or len(docs) > MAX_DIGEST_DOCS:
        raise ProtocolError("'docs' must be a list of keys")
    keys = [_interest(doc) for doc in docs]
    if not all(_inside(key, interest) for key in keys):
        raise ProtocolError(f"a key that is not a document under {interest}")
    return keys


def _document(item: Any, interest: str) -> tuple[str, Digest]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise ProtocolError("a document entry is [key, snapshot or null]")
    key = _interest(item[0])
    if not _inside(key, interest):
        raise ProtocolError(f"{key} is not a document under {interest}")
    if item[1] is None:
        return key, EMPTY
    try:
        return key, Digest.decode(base64.b64decode(item[1], validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise ProtocolError(f"the snapshot of {key} is malformed") from None


async def _control(kind: str, **fields: Any) -> AsyncGenerator[bytes, None]:
    yield encode_control(kind, **fields)


async def _done(key: str) -> AsyncGenerator[bytes, None]:
    yield encode_control("caught-up", key=key)
