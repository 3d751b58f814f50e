"""The key grammar: which URL paths name documents, folders and namespaces.

A key is a URL path. ``/profile`` is a document of the node's own namespace,
``/posts/`` the folder of keys under it, ``/~<node-id>/posts/1`` a document of
another node's namespace. Inside the node every key is held in one canonical
form, ``/~<namespace>/<path>``, so that ``/x`` and ``/~<own-id>/x`` are the same
document; :meth:`Key.display` gives back the short form for the own namespace.

Paths are split on ``/`` *before* percent-decoding, so ``%2F`` can never forge a
separator; a segment may hold any Unicode except control characters, and may
not be empty, ``.`` or ``..``. The first segment of a namespace may not start
with ``_``: those paths are the node's machinery (``/_health``, ``/_ui``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import InvalidKey, InvalidNodeId
from .identity import NodeId, parse_node_id

MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Key:
    """A parsed key: the namespace it lives in and its path there."""

    namespace: NodeId
    path: str  # always starts with "/"; ends with "/" for a folder

    @property
    def is_folder(self) -> bool:
        return self.path.endswith("/")

    @property
    def is_machinery(self) -> bool:
        """A document of the node's own machinery (``/_acl``), made only by the node."""
        return self.path.startswith("/_")

    # The one string under which the node stores and routes this key (set once:
    # every write asks for it several times). Machinery documents keep their bare
    # path, outside every namespace's key range, so that no folder ever lists or
    # streams them.
    canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical = self.path if self.is_machinery else f"/~{self.namespace}{self.path}"
        object.__setattr__(self, "canonical", canonical)

    def display(self, own: NodeId) -> str:
        """The key as a user of this node writes it: short for the own namespace."""
        return self.path if self.namespace == own else self.canonical

    def __str__(self) -> str:
        return self.canonical


@functools.lru_cache(maxsize=4096)
def parse_key(raw_path: str, own: NodeId) -> Key:
    """Parse a request path (still percent-encoded) into a :class:`Key`.

    Raises :class:`InvalidKey` naming what is wrong. Memoized (bounded; a pure
    function whose answer is immutable): every request parses its path.
    """
    if not raw_path.startswith("/"):
        raise InvalidKey("a key is a path that starts with '/'", key=raw_path)
    raw_segments = raw_path[1:].split("/")
    segments = []
    for raw in raw_segments:
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidKey(
                "the key is not valid UTF-8 once percent-decoded", key=raw_path
            ) from None
        if "/" in segment:
            raise InvalidKey("a key segment may not contain an encoded '/'", key=raw_path)
        segments.append(segment)
    key_text = "/" + "/".join(segments)
    if len(key_text.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"the key is longer than {MAX_KEY_BYTES} bytes", key=key_text[:64])
    if _CONTROL.search(key_text):
        raise InvalidKey("the key contains a control character", key=key_text)
    if segments[0].startswith("~"):
        try:
            namespace = parse_node_id(segments[0][1:])
        except InvalidNodeId as exc:
            raise InvalidKey(f"'~{segments[0][1:]}' is not a node id: {exc.detail}") from None
        segments = segments[1:] or [""]
    else:
        namespace = own
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == "" and not is_last:
            raise InvalidKey("a key may not contain an empty segment ('//')", key=key_text)
        if segment in (".", ".."):
            raise InvalidKey("a key may not contain '.' or '..' segments", key=key_text)
    if segments[0].startswith("_"):
        raise InvalidKey(
            "paths under '/_' are the node's own machinery, never documents", key=key_text
        )
    return Key(namespace, "/" + "/".join(segments))


def parse_canonical(text: str) -> Key:
    """Check a key in the canonical form peers exchange (``/~<id>/path``, decoded).

    Raises :class:`InvalidKey` unless ``text`` is exactly a key's canonical form.
    """
    if not text.startswith("/~"):
        raise InvalidKey("a canonical key starts with '/~<node-id>/'", key=text[:64])
    quoted = "/".join(quote(segment, safe="") for segment in text.split("/"))
    key = parse_key(quoted, NodeId(""))  # the namespace is explicit: `own` is never used
    if key.canonical != text:
        raise InvalidKey("the key is not in canonical form", key=text[:64])
    return key


@functools.lru_cache(maxsize=8192)
def folders_of(canonical: str) -> tuple[str, ...]:
    """Every folder that contains the canonical key, outermost first.

    ``/~ns/a/b`` is in ``/~ns/`` and ``/~ns/a/``. A folder is in its parents,
    not in itself. Memoized: every committed entry asks it (for its subscribers).
    """
    folders = []
    end = canonical.find("/", 1)  # the "/" after the namespace
    stop = len(canonical) - 1 if canonical.endswith("/") else len(canonical)
    while 0 <= end < stop:
        folders.append(canonical[: end + 1])
        end = canonical.find("/", end + 1)
    return tuple(folders)
