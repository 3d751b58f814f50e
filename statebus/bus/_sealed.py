"""The bus's side of sealed documents: opening their logs, sealing their writes.

A sealed document's log holds encrypted payloads (:mod:`statebus.sealing`), so
everything that works on Yjs updates (loading a Doc, integrating a peer's
entry, completing an out-of-order log) is given the plaintext updates that
this node can open, and nothing for those it cannot: a node no key was
sealed to keeps the entries (to relay them) and shows no value. Owned by the
bus; it holds the node's identity, whose Curve25519 key opens the document keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import Conflict, DecryptionError
from ..identity import Identity, NodeId
from ..keys import Key
from ..sealing import (
    KEYS,
    DocumentKeys,
    is_sealed,
    kind,
    new_document_key,
    seal_keys,
    seal_update,
)
from ..store import Entry


@dataclass
class Opened:
    """A log as this node can read it."""

    sealed: DocumentKeys | None = None  # None: a plain document
    updates: list[bytes] = field(default_factory=list)  # the Yjs updates it could open
    unopened: int = 0  # sealed updates it holds no key for


class Sealer:
    """Opens and seals documents encrypted to friends. One per bus."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    def open_log(self, key: Key, entries: Sequence[Entry]) -> Opened:
        if not any(is_sealed(entry.update) for entry in entries):
            return Opened(updates=[entry.update for entry in entries])
        opened = Opened(sealed=DocumentKeys())
        for entry in entries:  # keys first: a log may hold an update before its epoch's keys
            if kind(entry.update) == KEYS:
                opened.sealed.take(entry.update, self._identity)  # type: ignore[union-attr]
        for entry in entries:
            update = self.open_entry(key, opened.sealed, entry)  # type: ignore[arg-type]
            if update is not None:
                opened.updates.append(update)
            elif kind(entry.update) != KEYS:
                opened.unopened += 1
        return opened

    def open_entry(self, key: Key, keys: DocumentKeys, entry: Entry) -> bytes | None:
        """The Yjs update in a sealed entry; None for keys, or when no key opens it.

        Raises DecryptionError when this node holds the epoch's key and the
        payload still fails to authenticate: it was tampered with.
        """
        if kind(entry.update) == KEYS:
            keys.take(entry.update, self._identity)
            return None
        try:
            return keys.open(key.namespace, key.path, entry.update)
        except DecryptionError as exc:
            if "holds no key" in exc.detail:
                return None
            raise

    def create(self, recipients: Iterable[NodeId]) -> tuple[DocumentKeys, bytes]:
        """A new sealed document's keys and the payload that carries them (epoch 0)."""
        readers = {self._identity.node_id, *recipients}
        key = new_document_key()
        keys = DocumentKeys(keys={0: key}, recipients={0: set(readers)})
        return keys, seal_keys(0, key, readers)

    def rekey(self, keys: DocumentKeys, recipients: Iterable[NodeId]) -> list[bytes]:
        """Payloads that make ``recipients`` (and the owner) the readers from now on.

        Adding readers re-seals every epoch's key to them (they read the past
        too); removing one starts a new epoch they hold no key for.
        """
        readers = {self._identity.node_id, *recipients}
        current = keys.current
        before = keys.recipients.get(current, set())
        if readers == before:
            return []
        if not all(epoch in keys.keys for epoch in keys.recipients):
            raise Conflict("this node does not hold every key of the document; it cannot re-key")
        if before <= readers:  # only additions: the same keys, sealed to more readers
            payloads = []
            for epoch, key in sorted(keys.keys.items()):
                payloads.append(seal_keys(epoch, key, readers | keys.recipients[epoch]))
                keys.recipients[epoch] |= readers
            return payloads
        epoch, key = current + 1, new_document_key()  # someone removed: rotate
        keys.keys[epoch] = key
        keys.recipients[epoch] = set(readers)
        return [seal_keys(epoch, key, readers)]

    def seal(self, key: Key, keys: DocumentKeys, update: bytes) -> bytes:
        epoch = keys.current
        return seal_update(key.namespace, key.path, epoch, keys.keys[epoch], update)


__all__ = ["Opened", "Sealer", "is_sealed"]
