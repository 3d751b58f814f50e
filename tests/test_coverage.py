"""statebus.coverage: a digest (state vector and delete set) says exactly what a copy lacks."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Snapshot, Text, TransactionEvent, merge_updates

from statebus.coverage import EMPTY, Digest, encode_state_vector, lacks, waiting


def _digest(doc: Doc[Any]) -> Digest:
    return Digest.decode(Snapshot.from_doc(doc).encode())


def _history(seed: int, steps: int = 200) -> list[bytes]:
    """Updates of three writers editing one document, syncing now and then."""
    rng = random.Random(seed)
    docs: list[Doc[Any]] = [Doc(client_id=100 + n) for n in range(3)]
    updates: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        updates.append(event.update)

    for doc in docs:
        doc.observe(keep)
    for _ in range(steps):
        doc = rng.choice(docs)
        data = doc.get("data", type=Map)
        with doc.transaction():
            field = rng.choice("abcd")
            roll = rng.random()
            if roll < 0.4:
                data[field] = rng.randrange(100)
            elif roll < 0.55 and field in data:
                del data[field]  # an update that only deletes
            elif roll < 0.8:
                if "t" not in data:
                    data["t"] = Text("")
                text = data["t"]
                if len(str(text)) > 4 and rng.random() < 0.5:
                    del text[1:3]
                else:
                    text.insert(rng.randrange(len(str(text)) + 1), "xy")
            else:
                if "a" not in data or not isinstance(data["a"], Array):
                    data["a"] = Array([])
                data["a"].append(rng.randrange(9))
        if rng.random() < 0.1:
            source, target = rng.sample(docs, 2)
            target.apply_update(source.get_update(target.get_state()))
    return list(dict.fromkeys(updates))  # merge_updates must never see one update twice


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_applying_exactly_what_lacks_reaches_the_full_state(seed: int) -> None:
    updates = _history(seed)
    full: Doc[Any] = Doc()
    full.apply_update(merge_updates(*updates))
    assert not any(lacks(update, _digest(full)) for update in updates)
    rng = random.Random(seed)
    for _ in range(10):
        held = rng.sample(updates, len(updates) // 2)
        partial: Doc[Any] = Doc()
        partial.apply_update(merge_updates(*held))
        digest = _digest(partial)
        missing = [u for u in updates if lacks(u, digest)]
        caught_up: Doc[Any] = Doc()
        caught_up.apply_update(merge_updates(*dict.fromkeys(held + missing)))
        assert caught_up.get_update() == full.get_update()
        assert _digest(full).covers(digest)
        assert digest.covers(_digest(full)) == (not missing)


def test_an_update_that_only_deletes_is_seen_as_lacking() -> None:
    doc: Doc[Any] = Doc(client_id=7)
    data = doc.get("data", type=Map)
    data["a"] = 1
    before = _digest(doc)
    state = doc.get_state()
    del data["a"]
    delete_only = doc.get_update(state)
    assert Digest.decode(Snapshot.from_doc(doc).encode()).clocks == before.clocks  # no new clock
    assert lacks(delete_only, before)
    assert not lacks(delete_only, _digest(doc))


def test_waiting_parts_are_told_apart() -> None:
    doc: Doc[Any] = Doc(client_id=9)
    data = doc.get("data", type=Map)
    data["a"] = 1
    first = doc.get_update()
    state = doc.get_state()
    del data["a"]
    deletion = doc.get_update(state)
    fresh: Doc[Any] = Doc()
    fresh.apply_update(deletion)  # the deleted item is unknown: Yjs keeps it pending
    assert waiting(deletion, fresh.get_state())
    fresh.apply_update(first)
    assert not waiting(deletion, fresh.get_state())
    assert waiting(first, b"\x00")
    assert not waiting(first, fresh.get_state())


def test_digest_decoding() -> None:
    assert Digest.decode(b"") is EMPTY
    assert EMPTY.covers(EMPTY)
    doc: Doc[Any] = Doc(client_id=5)
    doc.get("data", type=Map)["x"] = 1
    digest = _digest(doc)
    assert digest.clocks == {5: 1}
    assert digest.state_vector == encode_state_vector({5: 1}) == doc.get_state()
    with pytest.raises(ValueError):
        Digest.decode(b"\x01\x05")
    with pytest.raises(ValueError):
        Digest.decode(Snapshot.from_doc(doc).encode() + b"\x00")


def test_varuints_decode_in_one_pass_and_refuse_what_is_cut_short() -> None:
    from statebus.coverage import _varuints, _write_varuint

    numbers = [0, 1, 127, 128, 300, 2**32 - 1, 2**53]
    data = bytearray()
    for number in numbers:
        _write_varuint(number, data)
    assert _varuints(bytes(data)) == numbers
    with pytest.raises(ValueError, match="truncated"):
        _varuints(bytes(data[:-1]))
    with pytest.raises(ValueError, match="longer than 64 bits"):
        _varuints(b"\xff" * 10 + b"\x01")
