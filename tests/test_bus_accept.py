"""Bus.accept: peer entries stored verbatim, refused when forged, misplaced or malformed,
ignored when they add nothing, and right whatever order they arrive in."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Map, TransactionEvent, merge_updates

from statebus.bus import Bus, Kind, PutValue
from statebus.identity import Identity, NodeId, sign_entry
from statebus.keys import Key, parse_key
from statebus.store import Entry, SQLiteStore


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with (
        SQLiteStore(tmp_path / "db", synchronous="OFF") as store,
        Bus(store, Identity.generate()) as opened,
    ):
        yield opened


def signed(author: Identity, path: str, update: bytes, namespace: NodeId | None = None) -> Entry:
    namespace = namespace or author.node_id
    signature = sign_entry(author, namespace, path, update)
    return Entry(f"/~{namespace}{path}", update, author.node_id, signature)


def updates_of(doc: Doc[Any]) -> list[bytes]:
    made: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        made.append(event.update)

    doc.observe(keep)
    return made


async def test_entries_are_stored_verbatim_and_published(bus: Bus) -> None:
    peer = Identity.generate()
    doc: Doc[Any] = Doc()
    made = updates_of(doc)
    doc.get("data", type=Map)["text"] = "hi"
    entry = signed(peer, "/note", made[0])
    seen: list[list[Entry]] = []
    stop = bus.listen(seen.append)
    key = Key(peer.node_id, "/note")
    stream = bus.stream(key)
    try:
        first = await anext(stream)
        assert first[0].kind == Kind.STATE and first[0].value is None
        result = await bus.accept([entry])
        assert result.stored == [entry] and not result.refused and result.redundant == 0
        with anyio.fail_after(5):
            (event,) = await anext(stream)
        assert event.kind == Kind.CHANGE and event.value == {"text": "hi"}
        assert event.key == f"/~{peer.node_id}/note"
    finally:
        await stream.aclose()
        stop()
    assert [e.key for batch in seen for e in batch] == [entry.key]
    (stored,) = (await bus.log(entry.key)).entries
    assert (stored.author, stored.signature, stored.update) == (
        peer.node_id,
        entry.signature,
        entry.update,
    )
    assert await bus.read(key) == ({"text": "hi"}, stored.seq)


async def test_forged_misplaced_and_malformed_entries_are_refused(bus: Bus) -> None:
    peer, other = Identity.generate(), Identity.generate()
    doc: Doc[Any] = Doc()
    made = updates_of(doc)
    doc.get("data", type=Map)["a"] = 1
    good = signed(peer, "/x", made[0])
    forged = Entry(good.key, good.update, good.author, bytes(64))
    altered = Entry(good.key, good.update + b"\x00", good.author, good.signature)
    misplaced = signed(peer, "/x", made[0], namespace=other.node_id)  # peer writing other's
    relabelled = Entry(f"/~{peer.node_id}/y", good.update, good.author, good.signature)
    folder = signed(peer, "/dir/", made[0])
    machinery = Entry(f"/~{peer.node_id}/_peers", good.update, good.author, good.signature)
    malformed = signed(peer, "/bad", b"\xff\xfe not yjs")
    result = await bus.accept(
        [forged, altered, misplaced, relabelled, folder, machinery, malformed]
    )
    assert result.stored == []
    reasons = [reason for _, reason in result.refused]
    assert len(reasons) == 7
    assert sum("bad signature" in r for r in reasons) == 3
    assert any(f"not by {other.node_id[:16]}" in r for r in reasons)
    assert any("is a folder" in r for r in reasons)
    assert any("machinery" in r for r in reasons)
    assert any("not a Yjs v1 update" in r for r in reasons)
    assert bus.head == 0


async def test_a_replay_changes_nothing(bus: Bus) -> None:
    peer = Identity.generate()
    doc: Doc[Any] = Doc()
    made = updates_of(doc)
    data = doc.get("data", type=Map)
    data["n"] = 1
    data["n"] = 2
    first, second = (signed(peer, "/n", update) for update in made)
    assert len((await bus.accept([first, second])).stored) == 2
    head = bus.head
    again = await bus.accept(
        [Entry(e.key, e.update, e.author, e.signature) for e in (first, second)]
    )
    assert again.stored == [] and again.redundant == 2 and bus.head == head
    # the same content under a new signature (a snapshot of it) adds nothing either
    snapshot = signed(peer, "/n", merge_updates(first.update, second.update))
    assert (await bus.accept([snapshot])).redundant == 1
    assert bus.head == head


async def test_the_own_namespace_comes_back_signed_by_itself(tmp_path: Path) -> None:
    identity = Identity.generate()
    async with (
        SQLiteStore(tmp_path / "old", synchronous="OFF") as store,
        Bus(store, identity) as old,
    ):
        key = parse_key("/profile", identity.node_id)
        await old.apply(key, PutValue({"name": "Ada"}))
        await old.apply(key, PutValue({"name": "Ada", "bio": "engines"}))
        await store.signed()  # as a friend holds them: signed (behind their commits)
        entries = (await old.log(key.canonical)).entries
    async with (
        SQLiteStore(tmp_path / "new", synchronous="OFF") as store,
        Bus(store, identity) as new,
    ):
        result = await new.accept([Entry(e.key, e.update, e.author, e.signature) for e in entries])
        assert len(result.stored) == 2
        assert (await new.read(key))[0] == {"name": "Ada", "bio": "engines"}


def _history(seed: int) -> list[bytes]:
    """Updates by three writers of one document that depend on each other."""
    rng = random.Random(seed)
    docs: list[Doc[Any]] = [Doc(client_id=10 + n) for n in range(3)]
    made: list[bytes] = []
    for doc in docs:
        doc.observe(lambda event: made.append(event.update))
    for step in range(120):
        doc = rng.choice(docs)
        data = doc.get("data", type=Map)
        field = rng.choice("abc")
        if rng.random() < 0.25 and field in data:
            del data[field]
        else:
            data[field] = step
        if rng.random() < 0.3:
            source, target = rng.sample(docs, 2)
            target.apply_update(source.get_update(target.get_state()))
    return list(dict.fromkeys(made))


@pytest.mark.parametrize("seed", [1, 5, 6, 8])  # each of these leaves yrs with stuck parts
async def test_out_of_order_arrival_ends_in_the_same_state(bus: Bus, seed: int) -> None:
    peer = Identity.generate()
    history = _history(seed)
    full: Doc[Any] = Doc()
    full.apply_update(merge_updates(*history))
    entries = [signed(peer, "/doc", update) for update in history]
    random.Random(seed).shuffle(entries)
    for start in range(0, len(entries), 7):
        await bus.accept(entries[start : start + 7])
    key = Key(peer.node_id, "/doc")
    value, _ = await bus.read(key)
    assert value == full.get("data", type=Map).to_py()
    state, _ = await bus.state(key)
    assert state == full.get_update()


@pytest.mark.parametrize("seed", [20, 27, 75])  # logs that load wrong when only replayed in order
async def test_an_out_of_order_log_loads_right_after_a_restart(tmp_path: Path, seed: int) -> None:
    peer, me = Identity.generate(), Identity.generate()
    history = _history(seed)
    full: Doc[Any] = Doc()
    full.apply_update(merge_updates(*history))
    entries = [signed(peer, "/doc", update) for update in history]
    random.Random(seed).shuffle(entries)
    key = Key(peer.node_id, "/doc")
    async with SQLiteStore(tmp_path / "db", synchronous="OFF") as store, Bus(store, me) as bus:
        for start in range(0, len(entries), 7):
            await bus.accept(entries[start : start + 7])
    async with SQLiteStore(tmp_path / "db", synchronous="OFF") as store, Bus(store, me) as bus:
        assert (await bus.state(key))[0] == full.get_update()


async def test_a_batch_is_verified_from_its_check_on_and_refused_per_entry(bus: Bus) -> None:
    """Bus.check queues the signatures at once (a batch waiting behind another is
    verified meanwhile); accept then applies it, refusing what does not verify."""
    peer = Identity.generate()
    doc: Doc[Any] = Doc()
    made = updates_of(doc)
    for n in range(150):  # more than two chunks of the verifying threads
        doc.get("data", type=Map)[f"f{n}"] = n
    entries = [signed(peer, "/many", update) for update in made]
    forged = entries[-1]  # the last: the entries before it do not depend on it
    entries[-1] = Entry(forged.key, forged.update, forged.author, bytes(64))
    checked = bus.check(entries)
    with anyio.fail_after(10):
        for verdict in checked.verdicts:
            await verdict  # verified with nothing accepted yet
    assert bus.head == 0
    result = await bus.accept(checked)
    assert len(result.stored) == 149
    assert [entry for entry, _ in result.refused] == [entries[-1]]
    assert "bad signature" in result.refused[0][1]
    value, _ = await bus.read(Key(peer.node_id, "/many"))
    assert value == {f"f{n}": n for n in range(149)}
