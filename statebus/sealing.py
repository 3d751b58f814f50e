"""Encrypted documents: content for some friends only, end to end.

A sealed document's log holds two kinds of payload in place of Yjs updates:

- **keys** (``K``): the document key of an *epoch*, a fresh random 32-byte
  key, sealed to each recipient's Curve25519 key (PyNaCl ``SealedBox``; the
  keys are derived from the recipients' node ids). The owner adds a recipient
  by writing a new ``K`` payload for the existing epochs (re-sealing the
  document key) and removes one by starting a new epoch without them: entries
  written after that are unreadable to the removed friend.
- **updates** (``U``): a Yjs update encrypted with a fresh key of its own
  (XChaCha20-Poly1305), that key wrapped with the epoch's document key. Both
  encryptions authenticate the namespace, path and epoch, so a payload cannot
  be moved to another document or epoch.

Every payload is signed outside, like any entry (over the ciphertext, with its
own domain tag), so relays and mirrors check, store and forward sealed logs
without being able to read or merge them; a recipient's node opens them.

Layout (big-endian)::

    "SBSEAL1" ‖ "K" ‖ epoch u32 ‖ JSON {node id: base64 sealed document key}
    "SBSEAL1" ‖ "U" ‖ epoch u32 ‖ nonce 24 ‖ wrapped key 48 ‖ nonce 24 ‖ ciphertext
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from .errors import DecryptionError, InvalidNodeId
from .identity import Identity, NodeId, parse_node_id, public_key_from_node_id, seal_to

MAGIC = b"SBSEAL1"
KEYS = b"K"
UPDATE = b"U"
KEY_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_EPOCH = struct.Struct(">I")
_WRAPPED = KEY_SIZE + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_HEAD = len(MAGIC) + 1 + _EPOCH.size


def is_sealed(payload: bytes) -> bool:
    return payload.startswith(MAGIC)


def _aad(namespace: NodeId, path: str, epoch: int, purpose: bytes) -> bytes:
    return (
        b"statebus/sealed/v1\0"
        + purpose
        + public_key_from_node_id(namespace)
        + (_EPOCH.pack(epoch) + path.encode())
    )


def _encrypt(key: bytes, message: bytes, aad: bytes) -> bytes:
    nonce = nacl.utils.random(NONCE_SIZE)
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(message, aad, nonce, key)


def _decrypt(key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    try:
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[NONCE_SIZE:], aad, sealed[:NONCE_SIZE], key
            )
        )
    except (nacl.exceptions.CryptoError, ValueError):
        raise DecryptionError(f"{what} fails to authenticate: wrong key, or tampered") from None


def new_document_key() -> bytes:
    return nacl.utils.random(KEY_SIZE)


def seal_keys(epoch: int, key: bytes, recipients: Iterable[NodeId]) -> bytes:
    """A ``K`` payload: the epoch's document key sealed to every recipient."""
    sealed = {r: base64.b64encode(seal_to(r, key)).decode() for r in sorted(set(recipients))}
    return MAGIC + KEYS + _EPOCH.pack(epoch) + json.dumps(sealed).encode()


def seal_update(
    namespace: NodeId, path: str, epoch: int, document_key: bytes, update: bytes
) -> bytes:
    """A ``U`` payload: ``update`` under a fresh key, wrapped with the document key."""
    fresh = nacl.utils.random(KEY_SIZE)
    wrapped = _encrypt(document_key, fresh, _aad(namespace, path, epoch, b"wrap"))
    body = _encrypt(fresh, update, _aad(namespace, path, epoch, b"body"))
    return MAGIC + UPDATE + _EPOCH.pack(epoch) + wrapped + body


@dataclass
class DocumentKeys:
    """The epochs of one sealed document as one node sees them.

    ``keys`` holds the document keys this node could open (the owner's and the
    recipients'), ``recipients`` who each epoch was sealed to (as far as its
    ``K`` payloads say). Owned by whoever holds the document's plaintext.
    """

    keys: dict[int, bytes] = field(default_factory=dict)
    recipients: dict[int, set[NodeId]] = field(default_factory=dict)

    @property
    def current(self) -> int:
        return max(self.recipients, default=-1)

    def readers(self) -> frozenset[NodeId]:
        return frozenset(self.recipients.get(self.current, set()))

    def take(self, payload: bytes, identity: Identity) -> None:
        """Learn from a ``K`` payload: who the epoch is sealed to, and its key if ours."""
        epoch, sealed = _parse_keys(payload)
        self.recipients.setdefault(epoch, set()).update(sealed)
        mine = sealed.get(identity.node_id)
        if mine is not None and epoch not in self.keys:
            key = identity.unseal(mine)
            if len(key) != KEY_SIZE:
                raise DecryptionError("a sealed document key has the wrong size")
            self.keys[epoch] = key

    def open(self, namespace: NodeId, path: str, payload: bytes) -> bytes:
        """The Yjs update inside a ``U`` payload; DecryptionError when this node
        holds no key for its epoch, or it was altered."""
        if not payload.startswith(MAGIC + UPDATE) or len(payload) < _HEAD + 2 * NONCE_SIZE:
            raise DecryptionError("not a sealed update")
        (epoch,) = _EPOCH.unpack_from(payload, len(MAGIC) + 1)
        key = self.keys.get(epoch)
        if key is None:
            raise DecryptionError(f"this node holds no key for epoch {epoch} of {path}")
        wrapped_end = _HEAD + NONCE_SIZE + _WRAPPED
        fresh = _decrypt(
            key, payload[_HEAD:wrapped_end], _aad(namespace, path, epoch, b"wrap"), "a wrapped key"
        )
        return _decrypt(
            fresh, payload[wrapped_end:], _aad(namespace, path, epoch, b"body"), "a sealed update"
        )


def kind(payload: bytes) -> bytes:
    """``K`` or ``U`` for a sealed payload."""
    return payload[len(MAGIC) : len(MAGIC) + 1]


def _parse_keys(payload: bytes) -> tuple[int, dict[NodeId, bytes]]:
    if not payload.startswith(MAGIC + KEYS) or len(payload) < _HEAD:
        raise DecryptionError("not a sealed key payload")
    (epoch,) = _EPOCH.unpack_from(payload, len(MAGIC) + 1)
    try:
        raw = json.loads(payload[_HEAD:])
        if not isinstance(raw, Mapping):
            raise ValueError("not an object")
        sealed = {parse_node_id(r): base64.b64decode(v, validate=True) for r, v in raw.items()}
    except (ValueError, TypeError, InvalidNodeId):
        raise DecryptionError("a sealed key payload is damaged") from None
    return epoch, sealed
