"""Write grants: a namespace's owner lets named nodes write a folder (a group forum).

The owner's node signs, for each writer and each folder (or key) its sharing
rules let that writer write, a *grant*: (namespace, writer, path) under the tag
``statebus/grant/v1``. The writer's node keeps the grants it was given
(``DATA/grants.json``) and attaches the one that covers a key to every entry
it authors there, so that any node can check such an entry without asking
anyone: the writer's signature over the update, and the owner's over the grant.
The owner's own node checks its current rules as well, so a writer taken off
the rules can no longer write through it. Nodes that already hold a grant
cannot learn of its withdrawal by themselves; it only ever covered the path
the owner named.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datadir import write_private
from .errors import BadSignature, InvalidNodeId, ProtocolError
from .identity import Identity, NodeId, parse_node_id, public_key_from_node_id, verify_signature

GRANT_TAG = b"statebus/grant/v1\0"
SIGNATURE_SIZE = 64
_LENGTH = struct.Struct("!H")


def grant_message(namespace: NodeId, writer: NodeId, path: str) -> bytes:
    encoded = path.encode()
    return b"".join(
        (
            GRANT_TAG,
            public_key_from_node_id(namespace),
            public_key_from_node_id(writer),
            _LENGTH.pack(len(encoded)),
            encoded,
        )
    )


def covers(grant_path: str, key_path: str) -> bool:
    """Whether a grant of ``grant_path`` (a key, or a folder ending in ``/``) covers a key."""
    return key_path == grant_path or (grant_path.endswith("/") and key_path.startswith(grant_path))


@dataclass(frozen=True, slots=True)
class Grant:
    """The owner's signature letting one writer write ``path`` of its namespace."""

    path: str
    signature: bytes

    @classmethod
    def issue(cls, owner: Identity, writer: NodeId, path: str) -> Grant:
        return cls(path, owner.sign(grant_message(owner.node_id, writer, path)))

    def verify(self, namespace: NodeId, writer: NodeId) -> None:
        """Raise BadSignature unless the namespace's owner granted ``writer`` this path."""
        try:
            verify_signature(namespace, grant_message(namespace, writer, self.path), self.signature)
        except BadSignature:
            raise BadSignature(
                f"the grant of {self.path} to {writer[:16]}… is not {namespace[:16]}…'s"
            ) from None

    def encode(self) -> bytes:
        path = self.path.encode()
        return _LENGTH.pack(len(path)) + path + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Grant:
        """Parse an encoded grant; ProtocolError when it is malformed."""
        if len(data) < _LENGTH.size:
            raise ProtocolError("a truncated grant")
        (length,) = _LENGTH.unpack_from(data)
        end = _LENGTH.size + length
        if len(data) != end + SIGNATURE_SIZE:
            raise ProtocolError("a grant of the wrong length")
        try:
            path = data[_LENGTH.size : end].decode()
        except UnicodeDecodeError:
            raise ProtocolError("a grant whose path is not text") from None
        return cls(path, data[end:])


class Held:
    """The grants this node was given, by namespace; kept in ``DATA/grants.json``.

    Owned by the server's lifespan: federation adds what owners send, the bus
    looks here before it writes into another node's namespace.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._grants: dict[NodeId, dict[str, bytes]] = {}
        if path is not None and path.exists():
            self._grants = _read(path)

    def find(self, namespace: NodeId, key_path: str) -> Grant | None:
        """The most specific grant that covers ``key_path`` in ``namespace``."""
        best: Grant | None = None
        for path, signature in self._grants.get(namespace, {}).items():
            if covers(path, key_path) and (best is None or len(path) > len(best.path)):
                best = Grant(path, signature)
        return best

    def replace(self, namespace: NodeId, grants: Iterable[Grant]) -> None:
        """What ``namespace``'s owner grants this node now (the previous set goes)."""
        fresh = {grant.path: grant.signature for grant in grants}
        if fresh == self._grants.get(namespace, {}):
            return
        if fresh:
            self._grants[namespace] = fresh
        else:
            self._grants.pop(namespace, None)
        if self._path is not None:
            write_private(self._path, json.dumps(_dump(self._grants), indent=1))


def _dump(grants: dict[NodeId, dict[str, bytes]]) -> dict[str, Any]:
    return {
        namespace: {path: base64.b64encode(sig).decode() for path, sig in paths.items()}
        for namespace, paths in grants.items()
    }


def _read(path: Path) -> dict[NodeId, dict[str, bytes]]:
    try:
        raw = json.loads(path.read_text())
        return {
            parse_node_id(namespace): {p: base64.b64decode(s) for p, s in paths.items()}
            for namespace, paths in raw.items()
        }
    except (OSError, ValueError, AttributeError, InvalidNodeId):
        return {}  # a damaged file: the owners send their grants again at the next link
