"""Sealed documents: only recipients open them; nothing moved or altered opens."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map

from statebus.errors import DecryptionError
from statebus.identity import Identity
from statebus.sealing import (
    DocumentKeys,
    is_sealed,
    kind,
    new_document_key,
    seal_keys,
    seal_update,
)

OWNER, FRIEND, OTHER = Identity.generate(), Identity.generate(), Identity.generate()
NS = OWNER.node_id


def update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("data", type=Map)["text"] = text
    return doc.get_update()


def test_recipients_open_what_others_cannot() -> None:
    key = new_document_key()
    keys_payload = seal_keys(0, key, [OWNER.node_id, FRIEND.node_id])
    secret = update("for friends only")
    payload = seal_update(NS, "/notes/1", 0, key, secret)
    assert is_sealed(payload) and kind(payload) == b"U" and kind(keys_payload) == b"K"
    assert b"for friends only" not in payload

    for reader in (OWNER, FRIEND):
        known = DocumentKeys()
        known.take(keys_payload, reader)
        assert known.open(NS, "/notes/1", payload) == secret
        assert known.readers() == {OWNER.node_id, FRIEND.node_id}

    outsider = DocumentKeys()
    outsider.take(keys_payload, OTHER)  # learns who may read, not the key
    assert outsider.keys == {}
    with pytest.raises(DecryptionError, match="no key for epoch 0"):
        outsider.open(NS, "/notes/1", payload)


def test_a_payload_moved_or_altered_does_not_open() -> None:
    key = new_document_key()
    known = DocumentKeys()
    known.take(seal_keys(0, key, [FRIEND.node_id]), FRIEND)
    payload = seal_update(NS, "/notes/1", 0, key, update("x"))
    with pytest.raises(DecryptionError, match="tampered"):
        known.open(NS, "/notes/2", payload)  # another document
    with pytest.raises(DecryptionError, match="tampered"):
        known.open(FRIEND.node_id, "/notes/1", payload)  # another namespace
    for index in (len(payload) - 1, 40, 80):
        flipped = payload[:index] + bytes([payload[index] ^ 1]) + payload[index + 1 :]
        with pytest.raises(DecryptionError):
            known.open(NS, "/notes/1", flipped)


def test_adding_a_recipient_reseals_and_removing_one_rotates() -> None:
    first = new_document_key()
    before, after = update("before"), update("after")
    old = seal_update(NS, "/n", 0, first, before)
    friend = DocumentKeys()
    friend.take(seal_keys(0, first, [OWNER.node_id, FRIEND.node_id]), FRIEND)

    late = DocumentKeys()  # OTHER added later: the same epoch key, sealed to them too
    late.take(seal_keys(0, first, [OWNER.node_id, FRIEND.node_id]), OTHER)
    late.take(seal_keys(0, first, [OWNER.node_id, FRIEND.node_id, OTHER.node_id]), OTHER)
    assert late.open(NS, "/n", old) == before

    second = new_document_key()  # FRIEND removed: a new epoch without them
    rotate = seal_keys(1, second, [OWNER.node_id, OTHER.node_id])
    new = seal_update(NS, "/n", 1, second, after)
    friend.take(rotate, FRIEND)
    late.take(rotate, OTHER)
    assert friend.current == 1 and FRIEND.node_id not in friend.readers()
    assert friend.open(NS, "/n", old) == before  # what they had, they keep
    with pytest.raises(DecryptionError, match="no key for epoch 1"):
        friend.open(NS, "/n", new)
    assert late.open(NS, "/n", new) == after


@pytest.mark.parametrize(
    "payload",
    [b"SBSEAL1K\x00\x00\x00\x00not json", b"SBSEAL1K\x00\x00\x00\x00[]", b"SBSEAL1K\x00"],
)
def test_a_damaged_key_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(DecryptionError, match=r"damaged|not a sealed"):
        DocumentKeys().take(payload, FRIEND)
