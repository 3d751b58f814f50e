"""Who may receive what: the one decision every outbound path of federation asks.

Issue 4 (privacy) replaces :class:`Policy` with private-by-default sharing
read from ACL documents. Until then every key is shared with every
authenticated peer. Outbound paths call :meth:`Policy.can_read` per
(peer, document) when they queue live entries and when they list documents
for catch-up, so a per-peer filter costs one call per entry and peer.
"""

from __future__ import annotations

from ..identity import NodeId


class Policy:
    """Decides what a peer may receive. One per node, owned by federation."""

    def can_read(self, peer: NodeId, key: str) -> bool:
        """May ``peer`` receive the entries of ``key`` (canonical form)? Everything, for now."""
        return True
