"""The hub: a node's sessions, what each peer wants, and where each committed entry goes.

One bus listener (:meth:`Hub.route`) sees every committed entry, local or
foreign, once it is signed (this node's own a little after their commit), and
offers it to the sessions whose interests cover its key (the key or one of its
folders: a dictionary lookup per folder) and whose peer may read it
(:class:`Policy`), never back to the session it came from. Interests a node
does not serve itself (a third namespace that a peer or a local reader asked
for) are *wanted*: asked of every other peer, once, so that they relay
(statebus style: fetching subscribes upstream).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from ..bus import Bus, Checked
from ..grants import Grant, Held
from ..identity import NodeId
from ..keys import folders_of
from ..quotas import SpeedBumps
from ..store import Entry
from ._session import Session
from ._status import PeerStatus
from .policy import Policy

log = logging.getLogger(__name__)

MAX_WANTED = 10_000


def namespace_of(key: str) -> str:
    """The node id of a canonical key (``/~<id>/...``)."""
    return key[2 : key.index("/", 2)]


class Hub:
    """Owned by :class:`Federation`; sessions register here while they are open."""

    def __init__(
        self,
        bus: Bus,
        policy: Policy,
        bumps: SpeedBumps | None = None,
        *,
        issue: Callable[[NodeId], list[Grant]] = lambda writer: [],
        held: Held | None = None,
    ) -> None:
        self.bus = bus
        self.policy = policy
        self.bumps = bumps  # the speed bumps peers' entries are charged against
        self.issue = issue  # the grants this node's owner gives a peer, signed now
        self.held = held  # the grants peers' owners gave this node
        self.own = bus.own
        self.status: dict[NodeId, PeerStatus] = {}
        self.sessions: set[Session] = set()
        self._index: dict[str, set[Session]] = {}
        self._origin: dict[Entry, Session] = {}
        self._wanted: dict[str, anyio.Event] = {}
        self._unlisten = bus.listen(self.route, signed=True)

    def close(self) -> None:
        self._unlisten()
        for session in list(self.sessions):
            self.remove(session)

    def peer(self, node_id: NodeId) -> PeerStatus:
        status = self.status.get(node_id)
        if status is None:
            status = self.status[node_id] = PeerStatus(node_id)
        return status

    # -- sessions ----------------------------------------------------------

    def add(self, session: Session) -> None:
        """Register an authenticated session and start its catch-up."""
        self.sessions.add(session)
        session.status.sessions += 1
        session.status.connected_at = time.time()
        if session.passive:
            session.want(f"/~{self.own}/")
            return
        session.want(f"/~{session.peer}/")
        session.send_grants()
        for key in list(self._wanted):
            if not session.covers(key):
                session.want(key)

    def remove(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        session.status.sessions -= 1
        for key in session.interests:
            holders = self._index.get(key)
            if holders is not None:
                holders.discard(session)
                if not holders:
                    del self._index[key]
        session.close()

    def add_interest(self, session: Session, key: str) -> None:
        session.interests.add(key)
        self._index.setdefault(key, set()).add(session)

    # -- routing -----------------------------------------------------------

    def route(self, entries: list[Entry]) -> None:
        """The bus listener: offer each committed, signed entry to the sessions that want it."""
        if not self._index:
            return
        for entry in entries:
            origin = self._origin.get(entry)
            for session in self._holders(entry.key):
                if session is not origin and session.may_read(entry.key):
                    session.offer(entry)

    def _holders(self, key: str) -> set[Session]:
        found: set[Session] = set()
        for name in (key, *folders_of(key)):
            holders = self._index.get(name)
            if holders:
                found |= holders
        return found

    def published(self, origin: Session, keys: list[str]) -> None:
        """Keys just learned to be public: sync them again with the other sessions that
        want them (what they were not sent while this node did not know)."""
        for session in list(self.sessions):
            if session is not origin:
                for interest in {i for key in keys for i in session.interests_covering(key)}:
                    session.want(interest)

    async def accept(
        self, session: Session, checked: Checked, *, staged: Callable[[], None] | None = None
    ) -> None:
        """Hand a peer's batch (verified since :meth:`Bus.check`) to the bus, remembering
        where its entries came from (``staged``: see :meth:`Bus.accept`)."""
        for entry in checked.entries:
            self._origin[entry] = session
        try:
            result = await self.bus.accept(checked, staged=staged)
        finally:
            for entry in checked.entries:
                self._origin.pop(entry, None)
        session.status.entries_in += len(result.stored)
        if result.refused:
            session.status.refused += len(result.refused)
            entry, reason = result.refused[-1]
            session.status.failed(f"refused {len(result.refused)} entries: {reason}")

    # -- wanting what this node does not serve -----------------------------

    def relay(self, session: Session, key: str) -> None:
        """A peer wants ``key``: if a third node owns it, want it from the other peers."""
        if namespace_of(key) not in (self.own, session.peer):
            self.want(key, origin=session)

    def want(self, key: str, *, origin: Session | None = None) -> anyio.Event:
        """Want ``key`` from every peer (once); the event is set at the first catch-up."""
        event = self._wanted.get(key)
        if event is not None:
            return event
        if len(self._wanted) >= MAX_WANTED:
            log.warning("not asking peers for %s: %d keys wanted already", key, MAX_WANTED)
            done = anyio.Event()
            done.set()
            return done
        event = self._wanted[key] = anyio.Event()
        for session in list(self.sessions):
            if session is not origin and not session.covers(key):
                session.want(key)
        return event

    def caught_up(self, key: str) -> None:
        event = self._wanted.get(key)
        if event is not None:
            event.set()

    def covered(self, key: str) -> bool:
        """Whether some open session already brings ``key`` here."""
        return any(session.covers(key) for session in self.sessions)
