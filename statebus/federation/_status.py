"""What ``GET /_peers`` shows about each peer: link state and counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..identity import NodeId


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass(slots=True)
class PeerStatus:
    """One peer as this node sees it; updated in place by its sessions and link."""

    node_id: NodeId
    address: str | None = None  # the share line this node dials, if it dials the peer
    sessions: int = 0  # authenticated connections open now (either direction)
    connected_at: float | None = None
    last_sync: float | None = None
    entries_in: int = 0
    entries_out: int = 0
    refused: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.sessions > 0

    def failed(self, detail: str) -> None:
        self.last_error = detail
        self.last_error_at = time.time()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "address": self.address,
            "dialled": self.address is not None,
            "connected": self.connected,
            "connected_since": _iso(self.connected_at) if self.connected else None,
            "last_sync": _iso(self.last_sync),
            "entries_in": self.entries_in,
            "entries_out": self.entries_out,
            "refused": self.refused,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }
