"""JSON values inside Yjs documents: validation, minimal diffs, merge patches.

A key's value is a JSON object held in the root map ``data`` of its document.
Objects are ``Y.Map``, arrays ``Y.Array``, strings plain strings unless a Yjs
client made them ``Y.Text`` (a write then edits the text in place), numbers
IEEE doubles as in JavaScript. Integers outside the safe range ±(2**53 - 1)
cannot survive a JavaScript client and are refused (I-JSON, RFC 7493); an
integral number reads back as an integer, so ``2.0`` reads back ``2``.

Reading is total, as it must be for values a Yjs client made: what JSON cannot
hold reads as ``JSON.stringify(ymap.toJSON())`` would show it in JavaScript,
except binary content (a ``Uint8Array``), which reads as a base64 string.
``NaN`` and infinities read as ``null``, XML types as their XML text, an
embedded sub-document as ``{}``.

Writing a value turns only its differences into CRDT operations, so that
concurrent writers of other fields, other array items or other parts of a text
are all kept. A second root map, ``_statebus``, holds the tombstone that a
``DELETE`` sets and any later write clears; it converges like any Yjs map.

Nothing here awaits: every function runs inside one pycrdt transaction.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any, TypeAlias

import orjson
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from .errors import InvalidBody

JSON: TypeAlias = Any
MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
DATA_ROOT = "data"
META_ROOT = "_statebus"
_ABSENT: Any = object()
_PRIMITIVE = (str, float, int, bool, type(None), bytes)


def parse_object(body: bytes, *, what: str = "the body") -> dict[str, JSON]:
    """Parse and validate a JSON object, or raise :class:`InvalidBody`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidBody(f"{what} must be a JSON object, not {_json_type(value)}")
    validate(value)
    return value


def validate(value: JSON, depth: int = 0, path: str = "") -> None:
    """Refuse what a Yjs document cannot hold faithfully."""
    if depth > MAX_DEPTH:
        raise InvalidBody(f"the value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidBody(
                f"the integer at '{path or '/'}' is outside ±(2**53-1), "
                "which JavaScript clients cannot represent exactly"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidBody(f"the number at '{path or '/'}' is not finite")
        return
    if isinstance(value, dict):
        for name, item in value.items():
            validate(item, depth + 1, f"{path}/{name}")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            validate(item, depth + 1, f"{path}/{index}")
        return
    raise InvalidBody(f"unsupported value at '{path or '/'}'")


def _json_type(value: JSON) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


class DocValue:
    """The JSON view of one pycrdt Doc. Owned by the bus's live-doc cache."""

    __slots__ = ("data", "doc", "meta")

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.data: Map[Any] = doc.get(DATA_ROOT, type=Map)
        self.meta: Map[Any] = doc.get(META_ROOT, type=Map)

    @property
    def deleted(self) -> bool:
        return bool(_lookup(self.meta, "deleted", False))

    def read(self) -> dict[str, JSON]:
        """The current value (an empty document reads as ``{}``).

        In one transaction: pycrdt's ``to_py`` reads each item in a transaction of
        its own otherwise, and each one's commit runs the Doc's observers (a
        1000-field value: 3.2 -> 1.9 ms)."""
        with self.doc.transaction():
            value: dict[str, JSON] = normalize(plain(self.data) or {})
        return value

    def assign(self, value: Mapping[str, JSON]) -> None:
        """Make the value equal ``value`` with the fewest operations."""
        _assign_map(self.data, value)
        self.undelete()

    def patch(self, patch: Mapping[str, JSON]) -> None:
        """Apply an RFC 7396 merge patch, touching only the named fields."""
        _patch_map(self.data, patch)
        self.undelete()

    def merge(self, base: Mapping[str, JSON], value: Mapping[str, JSON]) -> None:
        """Apply only what changed from ``base`` to ``value`` (a three-way merge).

        A writer that read version ``base`` and wrote ``value`` changed only
        some fields; whatever others wrote since stays, field by field.
        """
        _merge_map(self.data, base, value)
        self.undelete()

    def delete(self) -> None:
        for name in list(self.data.keys()):
            del self.data[name]
        _store(self.meta, "deleted", True)

    def undelete(self) -> None:
        if self.deleted:
            _store(self.meta, "deleted", False)


def plain(ytype: Map[Any] | Array[Any]) -> Any:
    """pycrdt's Python view of a map or array, even when XML types sit inside."""
    try:
        return ytype.to_py()
    except ValueError:  # "XmlFragment has no Python equivalent": walk it ourselves
        return _walk(ytype)


def _walk(value: Any) -> Any:
    if isinstance(value, Map):
        return {name: _walk(item) for name, item in value.items()}
    if isinstance(value, Array):
        return [_walk(item) for item in value]
    if isinstance(value, Text | XmlFragment | XmlElement | XmlText):
        return str(value)
    return value


def normalize(value: JSON) -> JSON:
    """Turn pycrdt's Python view into JSON: integral floats back into ints, and
    what a Yjs client may store but JSON cannot hold into what JSON can."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {name: normalize(item) for name, item in value.items()}
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Doc):
        return {}
    return value


def to_json_bytes(value: JSON) -> bytes:
    return orjson.dumps(value)


def _lookup(ymap: Map[Any], name: str, default: Any) -> Any:
    """``ymap.get(name, default)`` in one lookup instead of three.

    pycrdt 0.14's ``Map.get`` asks ``name in ymap`` and then ``ymap[name]``,
    which asks again, each in a nested transaction: on a PATCH of one field
    that was a sixth of the write's CPU. The integrated map answers at once
    (and raises ``ValueError`` for a missing key).
    """
    doc = ymap.doc
    try:
        if doc._txn is not None:  # inside a write's transaction: no nested one
            found = ymap.integrated.get(doc._txn._txn, name)
        else:
            with doc.transaction() as txn:
                found = ymap.integrated.get(txn._txn, name)
    except ValueError:
        return default
    if isinstance(found, _PRIMITIVE):
        return found
    return ymap._maybe_as_type_or_doc(found)


def _store(ymap: Map[Any], name: str, value: Any) -> None:
    """``ymap[name] = value``; a plain value goes straight into the integrated
    map (pycrdt's ``__setitem__`` nests two transactions and type checks)."""
    if not isinstance(value, _PRIMITIVE):
        ymap[name] = value
        return
    doc = ymap.doc
    if doc._txn is not None:  # inside a write's transaction: no nested one
        ymap.integrated.insert(doc._txn._txn, name, value)
        return
    with doc.transaction() as txn:
        ymap.integrated.insert(txn._txn, name, value)


def _prelim(value: JSON) -> Any:
    """A fresh Yjs value for a JSON value: objects become maps, arrays arrays."""
    if isinstance(value, dict):
        return Map({name: _prelim(item) for name, item in value.items()})
    if isinstance(value, list):
        return Array([_prelim(item) for item in value])
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # a JavaScript number, as Yjs clients write it
    return value


def _same(current: Any, value: JSON) -> bool:
    """Whether a Yjs value already equals a JSON value (types matter: True != 1)."""
    if isinstance(current, Map | Array):
        return json_equal(normalize(plain(current)), value)
    if isinstance(current, Text | XmlFragment | XmlElement | XmlText):
        return json_equal(str(current), value)
    return json_equal(normalize(current), value)


def json_equal(a: JSON, b: JSON) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _assign_map(ymap: Map[Any], value: Mapping[str, JSON]) -> None:
    for name in [name for name in ymap.keys() if name not in value]:  # noqa: SIM118
        del ymap[name]
    for name, item in value.items():
        current = _lookup(ymap, name, _ABSENT)
        if current is _ABSENT:
            _store(ymap, name, _prelim(item))
        else:
            _assign_slot(ymap, name, current, item)


def _assign_slot(ymap: Map[Any], name: str, current: Any, item: JSON) -> None:
    if isinstance(current, _PRIMITIVE):  # the common case, before pycrdt's ABC checks
        if not json_equal(normalize(current), item):
            _store(ymap, name, _prelim(item))
    elif isinstance(current, Map) and isinstance(item, dict):
        _assign_map(current, item)
    elif isinstance(current, Array) and isinstance(item, list):
        _assign_array(current, item)
    elif isinstance(current, Text) and isinstance(item, str):
        _assign_text(current, item)
    elif not _same(current, item):
        _store(ymap, name, _prelim(item))


def _assign_array(yarray: Array[Any], items: list[JSON]) -> None:
    """Keep the common head and tail; replace only the middle."""
    current = [normalize(x) for x in plain(yarray) or []]
    head = 0
    limit = min(len(current), len(items))
    while head < limit and json_equal(current[head], items[head]):
        head += 1
    tail = 0
    while tail < limit - head and json_equal(
        current[len(current) - 1 - tail], items[len(items) - 1 - tail]
    ):
        tail += 1
    old_middle = len(current) - head - tail
    new_middle = items[head : len(items) - tail]
    if old_middle == 1 and len(new_middle) == 1:
        existing = yarray[head]
        if isinstance(existing, Map) and isinstance(new_middle[0], dict):
            _assign_map(existing, new_middle[0])
            return
    if old_middle:
        del yarray[head : head + old_middle]
    for offset, item in enumerate(new_middle):
        yarray.insert(head + offset, _prelim(item))


def _assign_text(ytext: Text, text: str) -> None:
    """Edit a Y.Text in place: one deletion and one insertion at most.

    pycrdt indexes text by UTF-8 bytes, so positions are found in code points
    (never splitting a character) and then converted.
    """
    current = str(ytext)
    if current == text:
        return
    head = 0
    limit = min(len(current), len(text))
    while head < limit and current[head] == text[head]:
        head += 1
    tail = 0
    while tail < limit - head and current[-1 - tail] == text[-1 - tail]:
        tail += 1
    start = len(current[:head].encode())
    removed = len(current[head : len(current) - tail].encode())
    inserted = text[head : len(text) - tail]
    if removed:
        del ytext[start : start + removed]
    if inserted:
        ytext.insert(start, inserted)


def _patch_map(ymap: Map[Any], patch: Mapping[str, JSON]) -> None:
    for name, item in patch.items():
        current = _lookup(ymap, name, _ABSENT)
        if item is None:
            if current is not _ABSENT:
                del ymap[name]
        elif isinstance(item, dict):
            if isinstance(current, Map):
                _patch_map(current, item)
            else:
                _store(ymap, name, _prelim(merge_patch({}, item)))
        elif current is _ABSENT:
            _store(ymap, name, _prelim(item))
        else:
            _assign_slot(ymap, name, current, item)


def _merge_map(ymap: Map[Any], base: Mapping[str, JSON], value: Mapping[str, JSON]) -> None:
    for name in base:
        if name not in value and name in ymap:
            del ymap[name]
    for name, item in value.items():
        if name in base and json_equal(base[name], item):
            continue  # the writer left this field alone
        current = _lookup(ymap, name, _ABSENT)
        before = base.get(name)
        if isinstance(current, Map) and isinstance(item, dict) and isinstance(before, dict):
            _merge_map(current, before, item)
        elif current is _ABSENT:
            _store(ymap, name, _prelim(item))
        else:
            _assign_slot(ymap, name, current, item)


def merge_patch(target: Mapping[str, JSON], patch: Mapping[str, JSON]) -> dict[str, JSON]:
    """RFC 7396 on plain JSON, to check what a patch would make before it is applied."""
    result = dict(target)
    for name, item in patch.items():
        if item is None:
            result.pop(name, None)
        elif isinstance(item, dict):
            current = result.get(name)
            result[name] = merge_patch(current if isinstance(current, dict) else {}, item)
        else:
            result[name] = item
    return result
