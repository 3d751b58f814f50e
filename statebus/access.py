"""Who may read and write what: the one access decision of a node.

Private is the default. The owner (token or cookie) reads and writes the whole
own namespace and reads every namespace replicated here. The owner shares a
key or a folder through the node's sharing document, ``/_acl``::

    {
      "/posts/":      {"read": "public"},
      "/diary/today": {"read": ["<node-id>", "<node-id>"]},
      "/forum/":      {"read": ["<node-id>"], "write": ["<node-id>"]}
    }

A rule names a key, or a folder (a trailing ``/``, covering every key under
it at any depth); the most specific rule that says ``read`` decides reads, and
the most specific that says ``write`` decides writes. ``"read": "private"``
takes a key back out of a shared folder. Everything not shared reads as
absent (404, never 403), in single reads, listings, folder streams and the
entries federation sends, so that nobody learns a private key exists.

:class:`Access` is owned by the server's lifespan; it follows the ``/_acl``
document as it changes, so decisions are a few dictionary lookups.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidBody, InvalidKey, InvalidNodeId
from .identity import NodeId, parse_node_id
from .keys import Key, parse_key

ACL_PATH = "/_acl"
PUBLIC = "public"
PRIVATE = "private"


class Role(enum.Enum):
    OWNER = "owner"
    PEER = "peer"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is asking: the owner, an authenticated peer node, or anyone."""

    role: Role
    node_id: NodeId | None = None

    @property
    def is_owner(self) -> bool:
        return self.role is Role.OWNER


OWNER = Reader(Role.OWNER)
ANONYMOUS = Reader(Role.ANONYMOUS)


def peer(node_id: NodeId) -> Reader:
    return Reader(Role.PEER, node_id)


@dataclass(frozen=True, slots=True)
class Rule:
    read: str | frozenset[NodeId] | None = None  # PUBLIC, PRIVATE, ids, or silent
    write: frozenset[NodeId] | None = None


class Access:
    """The sharing rules of one node, and the decisions made from them."""

    def __init__(self, own: NodeId) -> None:
        self.own = own
        self._own_prefix = f"/~{own}"
        self._rules: dict[str, Rule] = {}

    def update(self, value: Mapping[str, Any] | None) -> None:
        """Follow the sharing document (already validated when it was written)."""
        self._rules = parse_rules(value or {}, self.own)

    def _path(self, canonical: str) -> str | None:
        if canonical.startswith(self._own_prefix):
            return canonical[len(self._own_prefix) :]
        return None

    def _decide(self, path: str, field: str) -> Any:
        """The most specific rule for ``path`` that says something about ``field``."""
        for candidate in (path, *_enclosing(path)):
            rule = self._rules.get(candidate)
            if rule is not None:
                verdict = getattr(rule, field)
                if verdict is not None:
                    return verdict
        return None

    def can_read(self, reader: Reader, canonical: str) -> bool:
        """May ``reader`` learn anything of the key or folder ``canonical``?"""
        if reader.is_owner:
            return True
        path = self._path(canonical)
        if path is None:
            return False  # other namespaces: relayed to peers by federation, not shown here
        verdict = self._decide(path, "read")
        if verdict == PUBLIC:
            return True
        if isinstance(verdict, frozenset):
            return reader.node_id is not None and reader.node_id in verdict
        return False

    def can_write(self, writer: NodeId, canonical: str) -> bool:
        """May ``writer`` (a node id; the own id always may) author entries of this key?"""
        path = self._path(canonical)
        if path is None:
            return False
        if writer == self.own:
            return True
        verdict = self._decide(path, "write")
        return isinstance(verdict, frozenset) and writer in verdict

    def writable_paths(self, writer: NodeId) -> list[str]:
        """The keys and folders whose rules let ``writer`` write (what to grant it)."""
        return sorted(
            path
            for path, rule in self._rules.items()
            if rule.write is not None and writer in rule.write
        )

    def is_public(self, canonical: str) -> bool:
        path = self._path(canonical)
        return path is not None and self._decide(path, "read") == PUBLIC

    def readers(self, canonical: str) -> str | frozenset[NodeId]:
        """Who may read the key besides the owner: PUBLIC, or a set of ids (maybe empty)."""
        path = self._path(canonical)
        verdict = self._decide(path, "read") if path is not None else None
        if verdict == PUBLIC or isinstance(verdict, frozenset):
            return verdict
        return frozenset()


def parse_rules(value: Mapping[str, Any], own: NodeId) -> dict[str, Rule]:
    """Validate a sharing document; raise InvalidBody naming the first problem."""
    rules: dict[str, Rule] = {}
    for name, spec in value.items():
        try:
            key = parse_key(name, own)
        except InvalidKey as exc:
            raise InvalidBody(f"sharing rule {name!r}: {exc.detail}") from None
        if key.namespace != own:
            raise InvalidBody(f"sharing rule {name!r}: name a key of this node, like /posts/")
        if not isinstance(spec, dict) or not spec or set(spec) - {"read", "write"}:
            raise InvalidBody(f'sharing rule {name!r} must be an object with "read" and/or "write"')
        rules[key.path] = Rule(
            read=_read_field(name, spec["read"]) if "read" in spec else None,
            write=_ids(name, "write", spec["write"]) if "write" in spec else None,
        )
    return rules


def _read_field(name: str, read: Any) -> str | frozenset[NodeId]:
    if read in (PUBLIC, PRIVATE):
        return str(read)
    return _ids(name, "read", read)


def _ids(name: str, field: str, ids: Any) -> frozenset[NodeId]:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        hint = ' ("public", "private" or a list of node ids)' if field == "read" else ""
        raise InvalidBody(f'sharing rule {name!r}: "{field}" must be a list of node ids{hint}')
    try:
        return frozenset(parse_node_id(i) for i in ids)
    except InvalidNodeId as exc:
        raise InvalidBody(f"sharing rule {name!r}: {exc.detail}") from None


def _enclosing(path: str) -> list[str]:
    """The folders that hold ``path``, innermost first: /a/b/c -> /a/b/, /a/, /."""
    folders = []
    end = path.rfind("/", 0, len(path) - 1)
    while end >= 0:
        folders.append(path[: end + 1])
        end = path.rfind("/", 0, end)
    return folders


def acl_key(own: NodeId) -> Key:
    """The sharing document: a document of the node's machinery, in no folder."""
    return Key(own, ACL_PATH)
