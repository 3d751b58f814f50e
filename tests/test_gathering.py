"""JSON writes to one key that come in the same turn of the loop are written together:
one transaction, one entry, one signature, one commit (``Bus._gather``). What each
writer sees must not change: its write is acknowledged once durable, with a version
that holds it, or it fails alone."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from statebus.bus import Bus, Event, Patch, PutValue
from statebus.errors import StoreError
from statebus.identity import verify_entry
from statebus.keys import Key, parse_key
from statebus.values import DocValue
from tests.conftest import Node, NodeFactory
from tests.test_bus import fail_batches

JSON = {"Accept": "application/json"}


async def _key_with(
    node_factory: NodeFactory, path: str, first: dict[str, Any]
) -> tuple[Node, Bus, Key, int]:
    """A node whose key at ``path`` holds ``first`` (so its Doc is live), and that
    write's version."""
    node = await node_factory()
    bus = node.running.bus
    key = parse_key(path, bus.own)
    return node, bus, key, await bus.apply(key, Patch(first))


async def test_writes_in_one_turn_make_one_entry_and_each_is_acknowledged_with_it(
    node_factory: NodeFactory,
) -> None:
    node, bus, key, first = await _key_with(node_factory, "/together", {"start": True})
    versions: dict[int, int] = {}

    async def write(n: int) -> None:
        versions[n] = await bus.apply(key, Patch({f"w{n}": n}))

    async with anyio.create_task_group() as tg:  # all 40 reach the bus in one turn
        for n in range(40):
            tg.start_soon(write, n)
    log = await bus._store.load(key.canonical)
    assert len(log.entries) == 2  # the first write's, and one for the 40
    together = log.entries[1]
    assert set(versions.values()) == {together.seq} and together.seq > first
    value, version = await bus.read(key)
    assert value == {"start": True, **{f"w{n}": n for n in range(40)}}
    assert version == together.seq
    await bus._store.signed()
    signed = (await bus._store.load(key.canonical)).entries[1]
    verify_entry(bus.own, bus.own, "/together", signed.update, signed.signature)

    await node.stop()  # durable: the one entry holds all 40
    await node.start()
    assert (await node.running.bus.read(key))[0] == value


async def test_a_subscriber_is_told_each_writers_change_and_none_of_its_own(
    node_factory: NodeFactory,
) -> None:
    """Writes from different origins (readers that write) are written apart: a reader
    is not sent its own writes back, and is sent everyone else's."""
    _, bus, key, _ = await _key_with(node_factory, "/chat", {"open": True})
    told: list[Event] = []
    ready, last = anyio.Event(), anyio.Event()

    async def watch() -> None:
        async with aclosing(bus.stream(key, origin="alice")) as events:
            async for batch in events:
                told.extend(batch)
                ready.set()
                if any("c" in (event.value or {}) for event in batch):
                    last.set()

    async def write(name: str, origin: str | None) -> None:
        await bus.apply(key, Patch({name: 1}), origin=origin)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await ready.wait()
        told.clear()
        async with anyio.create_task_group() as writers:
            for name, origin in [("a1", "alice"), ("b1", "bob"), ("a2", "alice"), ("c", None)]:
                writers.start_soon(write, name, origin)
        with anyio.fail_after(10):
            await last.wait()
        tg.cancel_scope.cancel()
    log = await bus._store.load(key.canonical)
    assert len(log.entries) == 4  # the first write; alice's two together; bob's; the other
    assert all(event.origin != "alice" for event in told)
    assert len(told) == 2  # bob's and the one with no origin
    assert told[-1].value == {"open": True, "a1": 1, "b1": 1, "a2": 1, "c": 1}


async def test_a_writer_that_leaves_before_its_turn_is_written_still_has_its_write_kept(
    node_factory: NodeFactory,
) -> None:
    # the key's Doc is live: joining a turn takes no await
    _, bus, key, _ = await _key_with(node_factory, "/leaving", {"start": True})
    left = anyio.Event()

    async def leaver() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()  # delivered at its first wait: for the turn to be written
            await bus.apply(key, Patch({"leaver": 1}))
        left.set()

    async def stayer() -> None:
        assert await bus.apply(key, Patch({"stayer": 1})) > 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(leaver)
        tg.start_soon(stayer)
    assert left.is_set()
    assert (await bus.read(key))[0] == {"start": True, "leaver": 1, "stayer": 1}
    assert len((await bus._store.load(key.canonical)).entries) == 2


async def test_a_turn_that_fails_to_commit_fails_every_writer_in_it_and_shows_nowhere(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, bus, key, _ = await _key_with(node_factory, "/failing", {"start": True})
    broken = fail_batches(monkeypatch)  # the next batch fails in the writer process
    outcomes: dict[int, Any] = {}

    async def write(n: int) -> None:
        try:
            outcomes[n] = await bus.apply(key, Patch({f"w{n}": n}))
        except StoreError as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(write, n)
    assert broken == [1]  # the five were one job
    assert all(isinstance(outcome, StoreError) for outcome in outcomes.values())
    assert len(outcomes) == 5
    assert (await bus.read(key))[0] == {"start": True}
    assert await bus.apply(key, Patch({"after": 1})) > 0
    async with node.client() as client:
        assert (await client.get("/failing", headers=JSON)).json() == {"start": True, "after": 1}


class _Raising(Patch):
    """A change that raises while it runs: no parsed JSON write does, but a bug
    must fail its own writer and not the others gathered with it."""

    def run(self, view: DocValue) -> None:
        raise RuntimeError("this change cannot run")


async def test_a_change_that_raises_fails_its_writer_alone(node_factory: NodeFactory) -> None:
    _, bus, key, _ = await _key_with(node_factory, "/mixed", {"start": True})
    results = await asyncio.gather(
        bus.apply(key, Patch({"a": 1})),
        bus.apply(key, _Raising({"b": 2})),
        bus.apply(key, Patch({"c": 3})),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], int) and results[0] == results[2]
    assert (await bus.read(key))[0] == {"start": True, "a": 1, "c": 3}


async def test_a_write_of_a_field_written_in_the_same_turn_is_an_event_of_its_own(
    node_factory: NodeFactory,
) -> None:
    """A subscriber sees every value written, even when writes in flight together set
    the same field (or the whole value): those are not gathered into one entry."""
    _, bus, key, _ = await _key_with(node_factory, "/ticker", {"n": 0})
    told: list[Any] = []
    ready, last = anyio.Event(), anyio.Event()

    async def watch() -> None:
        async with aclosing(bus.stream(key)) as events:
            async for batch in events:
                told.extend(event.value for event in batch)
                ready.set()
                if any((event.value or {}).get("n") == "whole" for event in batch):
                    last.set()

    writes: list[Patch | PutValue] = [Patch({"n": 1}), Patch({"other": 1}), Patch({"n": 2})]
    writes += [Patch({"n": 3}), PutValue({"n": "whole"})]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await ready.wait()
        told.clear()
        versions = await asyncio.gather(*(bus.apply(key, change) for change in writes))
        with anyio.fail_after(10):
            await last.wait()
        tg.cancel_scope.cancel()
    # {n: 1, other: 1} together; then n=2, n=3 and the whole value, one entry each
    assert versions[0] == versions[1] < versions[2] < versions[3] < versions[4]
    assert [value["n"] for value in told] == [1, 2, 3, "whole"]
    assert told[0] == {"n": 1, "other": 1} and told[-1] == {"n": "whole"}


async def test_concurrent_patches_over_http_are_each_acknowledged_and_all_kept(
    node_factory: NodeFactory,
) -> None:
    """What a user sees with many writers of one key: every PATCH answered 200 with a
    version no older than its own write, and the key holding every write."""
    node = await node_factory()
    async with node.client() as client:
        await client.patch("/busy", json={"start": True})

        async def write(n: int) -> int:
            answer = await client.patch(
                "/busy", content=f'{{"w{n}": {n}}}', headers={"Content-Type": JSON["Accept"]}
            )
            assert answer.status_code == 200, answer.text
            return int(answer.json()["version"])

        versions = await asyncio.gather(*(write(n) for n in range(60)))
        final = await client.get("/busy", headers=JSON)
    assert final.json() == {"start": True, **{f"w{n}": n for n in range(60)}}
    assert max(versions) == int(final.headers["Version"].strip('"'))
    bus = node.running.bus
    log = await bus._store.load(parse_key("/busy", bus.own).canonical)
    assert {entry.seq for entry in log.entries} >= set(versions)  # each a written entry
