"""Federation: a node's links to its peers, both the ones it dials and those dialling it.

:class:`Federation` is opened by the server's lifespan after the bus
(``async with``) and owns one task group: one :class:`PeerLink` task per
peer it dials (``--peer``, and peers added at runtime with ``POST /_peers``,
kept in ``DATA/peers.json``). Sessions dialled *to* this node are attached
by the server's ``/_fed/*`` routes and live as long as their stream answer.

The protocol in brief (details in each module): prove ids both ways
(``_auth``), exchange digests per document and send exactly the signed entries
the other side lacks (``_sync``), then stream committed entries both ways
over the dialler's connection (``_session``, ``_link``); the hub routes them
by interest and asks :class:`Policy` before anything leaves (``_hub``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from ..access import acl_key
from ..bus import Bus
from ..datadir import write_private
from ..errors import DataDirError, InvalidNodeId, NotAuthenticated, NotFound, QuotaExceeded
from ..grants import Grant, Held
from ..identity import Identity, NodeId
from ..keys import Key
from ..quotas import SpeedBumps
from ..settings import Settings
from ..store import Entry
from ._address import PeerAddress
from ._auth import Challenges
from ._hub import Hub
from ._link import PEER_SCHEME, PUSH_HEADER, PeerLink
from ._session import Session
from ._status import PeerStatus
from .policy import Policy

__all__ = [
    "PEER_SCHEME",
    "PUSH_HEADER",
    "Federation",
    "PeerAddress",
    "PeerLink",
    "PeerStatus",
    "Policy",
]

log = logging.getLogger(__name__)

PEERS_FILE = "peers.json"
TOKEN_SECONDS = 30.0
MAX_PENDING_TOKENS = 256


class Federation:
    """The node's peer links. One per node; opened and closed once, by the lifespan."""

    def __init__(
        self,
        bus: Bus,
        identity: Identity,
        settings: Settings,
        *,
        policy: Policy | None = None,
        bumps: SpeedBumps | None = None,
        held: Held | None = None,
    ) -> None:
        self.bus = bus
        self.bumps = bumps
        self.held = held
        self.identity = identity
        self.settings = settings
        self.policy = policy or Policy(identity.node_id)
        self.hub: Hub | None = None
        self._challenges = Challenges(identity)
        self._pending: OrderedDict[str, tuple[NodeId, float]] = OrderedDict()
        self._attached: dict[str, Session] = {}
        self._links: dict[NodeId, PeerLink] = {}
        self._tg: TaskGroup | None = None
        self._state = "new"
        self._closing = False
        self._acl = acl_key(identity.node_id).canonical
        self._resharing = False
        self._reshare_again = False
        self._unlisten: Callable[[], None] = lambda: None

    @property
    def own(self) -> NodeId:
        return self.identity.node_id

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"Federation cannot open when {self._state}")
        self.hub = Hub(self.bus, self.policy, self.bumps, issue=self._issue, held=self.held)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._state = "open"
        self._unlisten = self.bus.listen(self._watch_sharing)
        for text in (*self.settings.peers, *self._saved()):
            await self._dial(PeerAddress.parse(text))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self.close_streams()
        assert self._tg is not None and self.hub is not None
        self._unlisten()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        self.hub.close()

    def close_streams(self) -> None:
        """Stop dialling and end every session, now and from now on (shutdown: the
        server waits for open streams before it closes the lifespan)."""
        self._closing = True
        for link in self._links.values():
            link.stop()
        if self.hub is not None:
            for session in list(self.hub.sessions):
                self.hub.remove(session)
        self._attached.clear()

    def _hub(self) -> Hub:
        if self.hub is None or self._state != "open":
            raise RuntimeError("federation is not open")
        return self.hub

    # -- peers this node dials ---------------------------------------------

    async def _dial(self, address: PeerAddress) -> PeerLink:
        if address.node_id == self.own:
            raise InvalidNodeId(f"{address.node_id} is this node's own id")
        link = self._links.get(address.node_id)
        if link is not None:
            return link
        link = PeerLink(
            self._hub(),
            self.identity,
            address,
            backoff=self.settings.peer_backoff,
            backoff_max=self.settings.peer_backoff_max,
            heartbeat=self.settings.peer_heartbeat,
            queue_limit=self.settings.peer_queue_limit,
        )
        self._links[address.node_id] = link
        assert self._tg is not None
        await self._tg.start(link.run)
        return link

    async def add_peer(self, share: str) -> PeerStatus:
        """Dial a peer from now on (``POST /_peers``), remembered across restarts."""
        address = PeerAddress.parse(share)
        known = address.node_id in self._links
        link = await self._dial(address)
        if not known:
            self._save()
        return link.status

    async def remove_peer(self, node_id: NodeId) -> bool:
        """Stop dialling a peer added at runtime; False if this node does not dial it."""
        link = self._links.pop(node_id, None)
        if link is None:
            return False
        link.stop()
        self._save()
        return True

    def peers(self) -> list[dict[str, Any]]:
        """Every peer this node dials or was dialled by, for ``GET /_peers``."""
        hub = self._hub()
        return [hub.status[node].as_json() for node in sorted(hub.status)]

    @property
    def _peers_path(self) -> Path:
        return self.settings.data_dir / PEERS_FILE

    def _saved(self) -> list[str]:
        try:
            data = json.loads(self._peers_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DataDirError(f"cannot read {self._peers_path}: {exc}") from None
        peers = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise DataDirError(f"{self._peers_path} is damaged: 'peers' is not a list of strings")
        return [p for p in peers if p not in self.settings.peers]

    def _save(self) -> None:
        given = {PeerAddress.parse(text).node_id for text in self.settings.peers}
        added = [str(link.address) for node, link in self._links.items() if node not in given]
        write_private(self._peers_path, json.dumps({"peers": sorted(added)}, indent=2) + "\n")

    # -- peers dialling this node (the server's /_fed/* routes) ------------

    def _accepting(self) -> None:
        if self._closing or self._state != "open":
            # 429 + Retry-After: "come back later", without alarming this node's log
            raise QuotaExceeded("this node is shutting down", retry_after=1.0, limit="shutdown")

    def hello(self, body: Any) -> dict[str, Any]:
        self._accepting()
        return self._challenges.answer(body)

    def admit(self, body: Any) -> str:
        """Check a dialler's proof; return the token that opens its stream."""
        peer = self._challenges.admit(body)
        if peer == self.own:
            raise NotAuthenticated("a node does not peer with itself")
        token = secrets.token_urlsafe(32)
        self._pending[token] = (peer, time.monotonic())
        while len(self._pending) > MAX_PENDING_TOKENS:
            self._pending.popitem(last=False)
        return token

    def attach(self, token: str) -> Session:
        """Open the session of a token from :meth:`admit` (``GET /_fed/stream``), once."""
        self._accepting()
        pending = self._pending.pop(token, None)
        if pending is None or time.monotonic() - pending[1] > TOKEN_SECONDS:
            raise NotAuthenticated("unknown or expired peer session: authenticate again")
        hub = self._hub()
        peer = pending[0]
        for old_token, old in list(self._attached.items()):
            if old.peer == peer:  # the peer reconnected: its old stream is dead
                self.detach(old_token)
        session = Session(
            hub, peer, hub.peer(peer), dialler=False, limit=self.settings.peer_queue_limit
        )
        self._attached[token] = session
        hub.add(session)
        log.info("%s dialled in", peer)
        return session

    def session(self, token: str) -> Session:
        """The open session of a token (``POST /_fed/push``)."""
        session = self._attached.get(token)
        if session is None or session.closed:
            raise NotAuthenticated("no open session for this token: authenticate again")
        return session

    def detach(self, token: str) -> None:
        session = self._attached.pop(token, None)
        if session is not None and self.hub is not None:
            self.hub.remove(session)

    # -- sharing rules -----------------------------------------------------

    def _issue(self, writer: NodeId) -> list[Grant]:
        """The grants the sharing rules give ``writer`` now, signed by this node."""
        return [Grant.issue(self.identity, writer, path) for path in self.policy.writable(writer)]

    def _watch_sharing(self, entries: list[Entry]) -> None:
        """A bus listener: when the sharing rules change, offer peers what they may now read."""
        if self._tg is not None and any(entry.key == self._acl for entry in entries):
            if self._resharing:
                self._reshare_again = True
            else:
                self._resharing = True
                self._tg.start_soon(self._reshare)

    async def _reshare(self) -> None:
        """Read the committed rules, then resync the own namespace with every peer (each
        side then sends what the other lacks and may read)."""
        try:
            again = True
            while again:
                self._reshare_again = False
                try:
                    rules, _ = await self.bus.read(acl_key(self.own))
                except NotFound:
                    rules = {}
                self.policy.follow(rules)
                for session in list(self._hub().sessions):
                    session.want(f"/~{self.own}/")
                    session.send_grants()
                again = self._reshare_again
        finally:
            self._resharing = False

    # -- local readers -----------------------------------------------------

    async def fetch(self, key: Key, *, wait: float = 0.0) -> None:
        """A local reader wants ``key``: unless this node owns it or a session brings it,
        ask every peer (once), and wait up to ``wait`` seconds for a first answer."""
        if key.namespace == self.own or self._state != "open":
            return
        hub = self._hub()
        if hub.covered(key.canonical):
            return
        event = hub.want(key.canonical)
        if wait > 0 and hub.sessions and not event.is_set():
            with anyio.move_on_after(wait):
                await event.wait()
