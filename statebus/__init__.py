"""statebus: a peer-to-peer node of Yjs CRDT documents behind a reactive HTTP server."""

from .bus import Bus
from .errors import StatebusError
from .federation import Federation, PeerAddress
from .identity import Identity, NodeId
from .keys import Key, parse_key
from .runner import NodeServer
from .server import create_app
from .settings import Settings
from .store import Entry, SQLiteStore, Store

__version__ = "0.1.0"

__all__ = [
    "Bus",
    "Entry",
    "Federation",
    "Identity",
    "Key",
    "NodeId",
    "NodeServer",
    "PeerAddress",
    "SQLiteStore",
    "Settings",
    "StatebusError",
    "Store",
    "__version__",
    "create_app",
    "parse_key",
]
