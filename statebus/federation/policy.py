"""Who may receive what: the one decision every outbound path of federation asks.

Outbound paths call :meth:`Policy.can_read` per (peer, document): when they
queue a live entry and when they list documents for catch-up, so a per-peer
filter costs one call per entry and peer. The rules:

- the node's own namespace: its sharing rules decide (:mod:`statebus.access`,
  private by default; ``public``, or named node ids);
- any namespace, to the node that owns it: always (a friend gives a node that
  lost its disk its data back);
- a third node's namespace: only keys its owner declared public. The owner
  sends that with its entries (a flag on each entry frame, and ``public``
  lists during catch-up), relays pass it on, and each node remembers it for
  the keys it holds (:meth:`learn`). Data shared with named friends only is
  never relayed: what a node was trusted with stays there.

Paths under ``/_`` (the node's machinery, e.g. its ``/_acl``) never leave.
Documents sealed to some friends (:mod:`statebus.sealing`) go to any peer
that wants them, and are relayed: what travels is ciphertext that only the
recipients' nodes open.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..access import Access, peer
from ..identity import NodeId

MAX_LEARNED = 100_000


def _namespace(key: str) -> str:
    return key[2 : key.index("/", 2)]


class Policy:
    """Decides what a peer may receive. One per node, owned by federation."""

    def __init__(
        self,
        own: NodeId,
        access: Access | None = None,
        sealed: Callable[[str], bool] = lambda key: False,
    ) -> None:
        self.own = own
        self._sealed = sealed
        self._prefix = f"/~{own}/"
        self._access = access  # None: everything of the own namespace is public
        self._public: OrderedDict[str, bool] = OrderedDict()  # learned, other namespaces

    def can_read(self, reader: NodeId, key: str) -> bool:
        """May ``reader`` receive the entries of ``key`` (canonical form)?"""
        path_at = key.index("/", 2)
        if key.startswith("/_", path_at):
            return False
        if self._sealed(key):
            return True
        if key.startswith(self._prefix):
            return self._access is None or self._access.can_read(peer(reader), key)
        if _namespace(key) == reader:
            return True
        return self._public.get(key, False)

    def writable(self, writer: NodeId) -> list[str]:
        """The paths of the own namespace the sharing rules let ``writer`` write."""
        return [] if self._access is None else self._access.writable_paths(writer)

    def follow(self, rules: Mapping[str, Any]) -> None:
        """Take the committed sharing rules (as the server's ``/_acl`` route also does)."""
        if self._access is not None:
            self._access.update(rules)

    def is_public(self, key: str) -> bool:
        """Whether ``key`` may be relayed to anyone, as far as this node knows."""
        if self._sealed(key):
            return True
        if key.startswith(self._prefix):
            return self._access is None or self._access.is_public(key)
        return self._public.get(key, False)

    def learn(self, key: str, public: bool) -> bool:
        """Remember what a peer said of a key of another namespace; True when the key
        has just become public here (peers that want it may now be sent it)."""
        if key.startswith(self._prefix):
            return False  # the own sharing rules decide, whatever a peer says
        was = self._public.get(key, False)
        self._public[key] = public
        self._public.move_to_end(key)
        while len(self._public) > MAX_LEARNED:
            self._public.popitem(last=False)
        return public and not was
