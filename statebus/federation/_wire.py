"""The frames a peer link carries, both ways: signed entries and control messages.

Every frame is ``kind (u8) || length (u32, big endian) || payload``.

- ``ENTRY`` (1): ``u16 key length || key (UTF-8, canonical) || author (56 ASCII
  bytes, the node id) || signature (64 bytes) || flags (u8) || update (the
  rest)``. The entry exactly as its author signed it; the receiver verifies it.
  Flag bit 0 (``PUBLIC``): the key's owner lets anyone read it, so it may be
  relayed (not signed: it tells relays what they may pass on). Flag bit 1
  (``GRANTED``): a writer the owner granted signed it, and ``u16 length ||
  grant`` (:class:`statebus.grants.Grant`) comes before the update.
- ``CONTROL`` (2): a JSON object with a ``t`` field (see ``_session``).

A stream of frames is cut anywhere by HTTP; :class:`FrameReader` reassembles
them and refuses oversized or unknown ones (:class:`ProtocolError`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ProtocolError
from ..identity import NODE_ID_LENGTH
from ..store import Entry

ENTRY = 1
CONTROL = 2
PUBLIC = 1  # entry flags
GRANTED = 2
SIGNATURE_SIZE = 64
MAX_FRAME = 32 * 1024 * 1024
MAX_CONTROL = 4 * 1024 * 1024
_HEADER = struct.Struct("!BI")
_KEY_LENGTH = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Control:
    """A decoded control message: its type and its fields."""

    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Carried:
    """A decoded entry frame: the entry, and whether its key may be relayed to anyone."""

    entry: Entry
    public: bool


Frame = Carried | Control


def encode_entry(entry: Entry, *, public: bool = False) -> bytes:
    key = entry.key.encode("utf-8")
    author = entry.author.encode("ascii")
    if len(author) != NODE_ID_LENGTH or len(entry.signature) != SIGNATURE_SIZE:
        raise ProtocolError(f"cannot frame the entry of {entry.key}: bad author or signature")
    flags = (PUBLIC if public else 0) | (GRANTED if entry.grant else 0)
    grant = _KEY_LENGTH.pack(len(entry.grant)) + entry.grant if entry.grant else b""
    payload_size = _KEY_LENGTH.size + len(key) + NODE_ID_LENGTH + SIGNATURE_SIZE + 1
    payload_size += len(grant) + len(entry.update)
    return b"".join(
        (
            _HEADER.pack(ENTRY, payload_size),
            _KEY_LENGTH.pack(len(key)),
            key,
            author,
            entry.signature,
            flags.to_bytes(),
            grant,
            entry.update,
        )
    )


def encode_entries(entries: Iterable[Entry], public: Callable[[str], bool]) -> bytes:
    """Frames of ``entries``, each flagged as ``public(key)`` says."""
    return b"".join(encode_entry(entry, public=public(entry.key)) for entry in entries)


def encode_control(kind: str, **fields: Any) -> bytes:
    payload = orjson.dumps({"t": kind, **fields})
    return _HEADER.pack(CONTROL, len(payload)) + payload


def _decode_entry(payload: memoryview) -> Carried:
    if len(payload) < _KEY_LENGTH.size:
        raise ProtocolError("a truncated entry frame")
    (key_length,) = _KEY_LENGTH.unpack_from(payload)
    start = _KEY_LENGTH.size
    author_at = start + key_length
    signature_at = author_at + NODE_ID_LENGTH
    flags_at = signature_at + SIGNATURE_SIZE
    update_at = flags_at + 1
    if len(payload) < update_at:
        raise ProtocolError("a truncated entry frame")
    try:
        key = bytes(payload[start:author_at]).decode("utf-8")
        author = bytes(payload[author_at:signature_at]).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("an entry frame with a key or author that is not text") from None
    signature = bytes(payload[signature_at:flags_at])
    flags = payload[flags_at]
    grant = b""
    if flags & GRANTED:
        if len(payload) < update_at + _KEY_LENGTH.size:
            raise ProtocolError("a truncated entry frame")
        (grant_length,) = _KEY_LENGTH.unpack_from(payload, update_at)
        grant_at = update_at + _KEY_LENGTH.size
        update_at = grant_at + grant_length
        if len(payload) < update_at:
            raise ProtocolError("a truncated entry frame")
        grant = bytes(payload[grant_at:update_at])
    entry = Entry(key, bytes(payload[update_at:]), author, signature, grant=grant)
    return Carried(entry, bool(flags & PUBLIC))


def _decode_control(payload: memoryview) -> Control:
    if len(payload) > MAX_CONTROL:
        raise ProtocolError(f"a control frame over {MAX_CONTROL} bytes")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProtocolError("a control frame that is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("t"), str):
        raise ProtocolError("a control frame without a type")
    return Control(body["t"], body)


class FrameReader:
    """Reassembles frames from chunks of a byte stream."""

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by ``chunk``, in order."""
        self._buffer += chunk
        frames: list[Frame] = []
        view = memoryview(self._buffer)
        offset = 0
        try:
            while len(view) - offset >= _HEADER.size:
                kind, length = _HEADER.unpack_from(view, offset)
                if length > self._max_frame:
                    raise ProtocolError(f"a frame of {length} bytes (limit {self._max_frame})")
                end = offset + _HEADER.size + length
                if end > len(view):
                    break
                with view[offset + _HEADER.size : end] as payload:
                    if kind == ENTRY:
                        frames.append(_decode_entry(payload))
                    elif kind == CONTROL:
                        frames.append(_decode_control(payload))
                    else:
                        raise ProtocolError(f"unknown frame kind {kind}")
                offset = end
        finally:
            view.release()
        del self._buffer[:offset]
        return frames


def decode_all(data: bytes, *, max_frame: int = MAX_FRAME) -> list[Frame]:
    """Every frame of a complete body; ProtocolError if it ends inside one."""
    reader = FrameReader(max_frame=max_frame)
    frames = reader.feed(data)
    if reader.pending:
        raise ProtocolError("the body ends inside a frame")
    return frames
