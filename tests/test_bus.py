"""The bus under pressure: stuck readers, many keys, long logs."""

from __future__ import annotations

import base64
import os
import signal
import tracemalloc
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from pycrdt import Doc, Map

from statebus.bus import Bus, Patch, PutValue
from statebus.bus._docs import LiveDoc
from statebus.errors import StoreError
from statebus.keys import Key, parse_key
from statebus.store import DocLog, Store, _sqlite
from statebus.store._sqlite import SQLiteStore
from statebus.values import normalize
from tests.conftest import Node, NodeFactory
from tests.sse import open_stream

JSON = {"Accept": "application/json"}
BINARY = {"Accept": "application/octet-stream"}


async def write_many(
    node: Node,
    key: str,
    count: int,
    *,
    writers: int = 50,
    first: int = 0,
    apart: bool = False,
) -> None:
    """``count`` PATCHes through the bus's one write path, ``writers`` at a time.
    ``apart``: each writer with an origin of its own, so that every write is an entry
    (and an event) of its own; the writes of one origin in one turn of the loop are
    gathered into one entry."""
    bus = node.running.bus
    parsed = parse_key(key, bus.own)

    async def writer(start: int) -> None:
        origin = f"writer {start}" if apart else None
        for n in range(first + start, first + count, writers):
            await bus.apply(parsed, Patch({f"f{n % 10}": n, "last": n}), origin=origin)

    async with anyio.create_task_group() as tg:
        for start in range(writers):
            tg.start_soon(writer, start)


def fail_batches(monkeypatch: pytest.MonkeyPatch, count: int | None = 1) -> list[int]:
    """Make the next ``count`` batches handed to the store's writer process (None: every
    one) fail there for real: their jobs arrive with nothing to sign their entries with.
    Returns the sizes of the batches broken so far (``monkeypatch.undo()`` stops it)."""
    original = SQLiteStore._hand_over
    broken: list[int] = []

    def hand_over(store: SQLiteStore, child: Any) -> None:
        if count is None or len(broken) < count:
            broken.append(len(store._jobs))
            for job in store._jobs:
                job.messages = {}
        original(store, child)

    monkeypatch.setattr(SQLiteStore, "_hand_over", hand_over)
    return broken


async def leave(bus: Bus, key: Key, patch: dict[str, Any]) -> None:
    """A write whose caller goes away once it is on its way to disk (a client that
    disconnects): the write runs up to its commit wait, then the caller is cancelled."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.apply, key, Patch(patch))
            await anyio.lowlevel.checkpoint()
            scope.cancel()


async def writer_idle(store: SQLiteStore) -> None:
    """Until the writer process has answered for every batch, those nobody waits for too."""
    with anyio.fail_after(10):
        while True:
            if not store._in_flight and not store._jobs:
                return
            await anyio.sleep(0.01)


async def compacted_log(store: Store, canonical: str) -> DocLog:
    """The key's log once it starts with a snapshot (compaction commits in the background)."""
    with anyio.fail_after(10):
        while True:
            log = await store.load(canonical)
            if log.entries[0].snapshot:
                return log
            await anyio.sleep(0.02)


async def test_a_reader_that_never_reads_does_not_grow_memory(node_factory: NodeFactory) -> None:
    node = await node_factory(queue_limit=64)
    bus = node.running.bus
    # Each event carries the whole value: ~4 KiB, so 10,000 of them are ~40 MiB,
    # far more than the kernel's socket buffers can hide.
    await bus.apply(parse_key("/hot", bus.own), PutValue({"filler": "z" * 4000}))
    # A real SSE connection whose client never reads a byte.
    stuck = await anyio.connect_tcp("127.0.0.1", node.port)
    await stuck.send(
        f"GET /hot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.token}\r\n\r\n".encode()
    )
    with anyio.fail_after(10):
        assert (await stuck.receive()).startswith(b"HTTP/1.1 200")  # subscribed; now stop reading
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        largest = 0
        for thousand in range(10):  # 10,000 updates in all
            await write_many(node, "/hot", 1000, first=thousand * 1000, apart=True)
            largest = max(largest, bus.stats().largest_backlog)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert largest <= 64
    assert bus.stats().overflows >= 1  # the bound was reached, and held
    assert growth < 3 * 1024 * 1024, f"memory grew by {growth} bytes"

    # Once it reads again, the stuck reader is resynced to the present.
    async with node.client() as client:
        final = (await client.get("/hot", headers=JSON)).json()
    assert final["last"] >= 9950  # the writers of the last thousand finish in any order
    received = bytearray()
    wanted = f'"last":{final["last"]}'.encode()
    with anyio.fail_after(30):
        while wanted not in received[-(1 << 21) :]:  # the last event is a whole Yjs state
            received += await stuck.receive(1 << 20)
    await stuck.aclose()


async def test_a_slow_reader_is_resynced_with_nothing_lost(node_factory: NodeFactory) -> None:
    node = await node_factory(queue_limit=4, replay_limit=10_000)
    async with node.client() as client:
        # Every event carries the whole value: with 64 kB in it, 300 events back the
        # unread connection up until the node must queue (and overflow) for it.
        await client.put("/slow", json={"n": -1, "filler": "f" * 64_000})
        reader, stream = await open_stream(client, "/slow")
        try:
            first = await reader.data()
            mirror: Doc[Any] = Doc()
            mirror.apply_update(base64.b64decode(first.json()["update"]))
            await write_many(node, "/slow", 300, writers=10, apart=True)
            head = node.running.bus.stats().head
            seen: list[int] = []
            with anyio.fail_after(20):
                while not seen or seen[-1] != head:
                    event = await reader.data()
                    body = event.json()
                    mirror.apply_update(base64.b64decode(body["update"]))
                    # Every event's value is the state its update leads to.
                    assert body["value"] == normalize(mirror.get("data", type=Map).to_py())
                    seen.append(int(event.id or 0))
            assert seen == sorted(set(seen))  # in order, nothing twice
            state = (await client.get("/slow", headers=BINARY)).content
            server: Doc[Any] = Doc()
            server.apply_update(state)
            assert mirror.get("data", type=Map).to_py() == server.get("data", type=Map).to_py()
            assert node.running.bus.stats().overflows >= 1
        finally:
            await stream.aclose()


async def test_live_documents_stay_under_their_bound(node_factory: NodeFactory) -> None:
    node = await node_factory(max_docs=10)
    bus = node.running.bus
    for i in range(60):
        await bus.apply(parse_key(f"/many/{i}", bus.own), PutValue({"i": i}))
        assert bus.stats().live_docs <= 10
    async with node.client() as client:
        for i in range(60):  # evicted documents come back from the log intact
            assert (await client.get(f"/many/{i}", headers=JSON)).json() == {"i": i}
    assert bus.stats().live_docs <= 10


async def test_compaction_keeps_the_value_the_diffs_and_the_signatures(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(compact_after=20)
    async with node.client() as client:
        await client.put("/long", json={"start": True})
        mirror: Doc[Any] = Doc()
        mirror.apply_update((await client.get("/long", headers=BINARY)).content)
        old_state = mirror.get_state()
        await write_many(node, "/long", 200, writers=4)
        bus = node.running.bus
        store = bus._store
        with anyio.fail_after(10):
            while True:  # compaction runs in the background
                info = await store.info(f"/~{bus.own}/long")
                if info is not None and info.log_entries <= 21:
                    break
                await anyio.sleep(0.02)
        await store.signed()  # the writes are signed behind their commits
        log = await store.load(f"/~{bus.own}/long")
        assert log.entries[0].snapshot
        # The snapshot is an entry signed by the namespace's owner, like any other.
        from statebus.identity import verify_entry

        for entry in log.entries:
            verify_entry(bus.own, bus.own, "/long", entry.update, entry.signature)
        value = (await client.get("/long", headers=JSON)).json()
        assert value["start"] is True and value["last"] >= 196
        diff = await client.get(
            "/long",
            params={"since": base64.urlsafe_b64encode(old_state).decode().rstrip("=")},
            headers=BINARY,
        )
        mirror.apply_update(diff.content)
        assert mirror.get("data", type=Map).to_py() == {
            k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in value.items()
        }
        # A reader resuming from before the snapshot gets the whole state.
        reader, stream = await open_stream(client, "/long", {"Last-Event-ID": "1"})
        try:
            assert (await reader.data()).json()["value"] == value
        finally:
            await stream.aclose()
    # And all of it survives a restart.
    await node.stop()
    await node.start()
    async with node.client() as client:
        assert (await client.get("/long", headers=JSON)).json() == value


async def test_a_busy_key_is_compacted_as_it_is_written_and_reloads_the_same(
    node_factory: NodeFactory,
) -> None:
    """Fifty writers at once: the log is compacted while writes are still in flight
    (from the Doc's state at a committed write), and what a restart rebuilds from the
    compacted log is exactly what readers saw before it."""
    node = await node_factory(compact_after=20)
    bus = node.running.bus
    await write_many(node, "/busy", 1000, writers=50)
    key = f"/~{bus.own}/busy"
    with anyio.fail_after(10):
        while True:  # the last compaction may still be on its way to disk
            log = await bus._store.load(key)
            # compaction kept up with the writers: a recent snapshot, a short tail
            if log.entries[0].snapshot and len(log.entries) <= 300:
                break
            await anyio.sleep(0.02)
    from statebus.identity import verify_entry

    await bus._store.signed()  # the writes are signed behind their commits
    for entry in (await bus._store.load(key)).entries:
        verify_entry(bus.own, bus.own, "/busy", entry.update, entry.signature)
    async with node.client() as client:
        before = await client.get("/busy", headers=JSON)
    assert before.json()["last"] >= 950
    assert sorted(before.json()) == [*(f"f{n}" for n in range(10)), "last"]
    await node.stop()
    await node.start()
    async with node.client() as client:
        after = await client.get("/busy", headers=JSON)
    assert after.json() == before.json()
    assert after.headers["Version"] == before.headers["Version"]


async def test_writes_whose_callers_leave_are_kept_and_the_key_still_compacts(
    node_factory: NodeFactory,
) -> None:
    """A caller that goes away mid-write (a client disconnecting) does not take the
    write with it: the writer commits it anyway. Until that outcome is known its Doc
    cannot be trusted as a snapshot of the log (the write might yet fail), so the key
    is compacted from its committed entries meanwhile, and nothing is lost either way."""
    node = await node_factory(compact_after=20)
    bus = node.running.bus
    key = parse_key("/left", bus.own)
    await bus.apply(key, Patch({"kept": 0}))
    for n in range(1, 11):  # each caller cancelled once its write is on its way
        await leave(bus, key, {f"left{n}": n})
    await write_many(node, "/left", 200, writers=10)
    canonical = f"/~{bus.own}/left"
    with anyio.fail_after(10):
        while True:  # committed entries re-read in a worker thread, in the background
            log = await bus._store.load(canonical)
            if log.entries[0].snapshot and len(log.entries) <= 100:
                break
            await anyio.sleep(0.02)
    await node.stop()
    await node.start()
    async with node.client() as client:
        value = (await client.get("/left", headers=JSON)).json()
    assert value["kept"] == 0
    assert all(value[f"left{n}"] == n for n in range(1, 11))
    assert value["last"] >= 190


async def test_once_the_writes_whose_callers_left_commit_the_key_compacts_live_again(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While writes whose callers left are on their way, the key is compacted from its
    committed log (read back in a worker thread); once the store has told their
    outcome, and they all committed, from the live Doc again, as any busy key is."""
    node = await node_factory(compact_after=20)
    bus = node.running.bus
    key = parse_key("/back", bus.own)
    store = bus._store
    assert isinstance(store, SQLiteStore)
    await bus.apply(key, Patch({"kept": 0}))
    for n in range(1, 4):  # each caller cancelled once its write is on its way
        await leave(bus, key, {f"left{n}": n})
    await writer_idle(store)  # the outcomes nobody waits for
    from_log: list[str] = []
    compact = Bus.compact

    async def counted(self: Bus, canonical: str) -> bool:
        from_log.append(canonical)
        return await compact(self, canonical)

    monkeypatch.setattr(Bus, "compact", counted)
    for n in range(60):
        await bus.apply(key, Patch({"n": n}))
    await compacted_log(store, key.canonical)
    assert from_log == []
    value = (await bus.read(key))[0]
    assert value == {"kept": 0, "left1": 1, "left2": 2, "left3": 3, "n": 59}


async def test_a_write_after_a_failed_one_is_neither_hidden_nor_compacted_away(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write A fails in the writer process while write B, applied to the same Doc after
    it, is still on its way to disk. The Doc held A, so it is dropped; the key is read
    before B commits. B was acknowledged: it must show in that read, in what the key's
    subscribers are told, and in the log when the key is compacted, and survive a
    restart; A must show nowhere, not even in the value sent with B's event."""
    node = await node_factory(compact_after=3)
    bus = node.running.bus
    key = parse_key("/fold", bus.own)
    await bus.apply(key, Patch({"a": 1}))
    await bus.apply(key, Patch({"b": 2}))  # A makes the tail 3 entries; B, 4: a snapshot
    monkeypatch.setattr(_sqlite, "IN_FLIGHT", 1)  # B's batch leaves once A's is answered
    broken = fail_batches(monkeypatch)  # the next batch, A's alone
    store = bus._store
    assert isinstance(store, SQLiteStore)
    writer = store.writer_pid
    assert writer is not None
    outcomes: dict[str, int | StoreError] = {}
    failed = anyio.Event()
    during: dict[str, Any] = {}
    read = anyio.Event()
    told: dict[int, Any] = {}  # version -> the value a subscriber of the key was told
    watching = anyio.Event()

    async def write(name: str, value: int) -> None:
        try:
            outcomes[name] = await bus.apply(key, Patch({name: value}))
        except StoreError as exc:
            outcomes[name] = exc
            os.kill(writer, signal.SIGSTOP)  # B cannot commit until SIGCONT
            failed.set()

    async def read_now() -> None:
        during.update((await bus.read(key))[0])
        read.set()

    async def watch() -> None:
        async with aclosing(bus.stream(key)) as events:
            async for batch in events:
                told.update((event.seq, event.value) for event in batch if event.seq)
                watching.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as subscriber:
            subscriber.start_soon(watch)
            await watching.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(write, "failed", 3)
                while not broken:  # A is applied and handed to the writer
                    await anyio.lowlevel.checkpoint()
                assert broken == [1]
                tg.start_soon(write, "kept", 4)
                await failed.wait()
                try:
                    tg.start_soon(read_now)  # loads the key again, from a log without B yet
                    with anyio.move_on_after(2):  # a read that does not wait for B ends here
                        await read.wait()
                finally:
                    os.kill(writer, signal.SIGCONT)
            outcome = outcomes["kept"]
            assert isinstance(outcome, int)
            kept: int = outcome
            while True:  # B's event reaches the subscriber
                if kept in told:
                    break
                await anyio.sleep(0.01)
            subscriber.cancel_scope.cancel()
    assert isinstance(outcomes["failed"], StoreError)
    expected = {"a": 1, "b": 2, "kept": 4}
    assert during == expected
    assert told[kept] == expected
    assert not any("failed" in (value or {}) for value in told.values())
    assert (await bus.read(key))[0] == expected
    for n in range(5):  # enough writes for the key to be compacted again
        await bus.apply(key, Patch({"then": n}))
    expected["then"] = 4
    log = await compacted_log(bus._store, key.canonical)
    rebuilt: Doc[Any] = Doc()
    for entry in log.entries:
        rebuilt.apply_update(entry.update)
    assert normalize(rebuilt.get("data", type=Map).to_py()) == expected
    await node.stop()
    await node.start()
    assert (await node.running.bus.read(key))[0] == expected


async def test_a_writer_process_killed_under_load_loses_no_acknowledged_write(
    node_factory: NodeFactory,
) -> None:
    """Thirty writers patch fields of their own into one key while the store's writer
    process is killed (-9) once; every seventh write's caller leaves as soon as it is
    handed over. Writes in the dead writer's batches fail (they may or may not be on
    disk) and a new writer takes over. Every acknowledged write is in the key, as the
    node shows it and after a restart, and the two agree."""
    node = await node_factory(compact_after=20)
    bus = node.running.bus
    key = parse_key("/crash", bus.own)
    store = bus._store
    assert isinstance(store, SQLiteStore)
    acknowledged: dict[str, int] = {}
    failures: list[StoreError] = []
    killed = anyio.Event()

    async def writer(w: int) -> None:
        for n in range(40):
            field = f"w{w}_{n}"
            if n % 7 == 3:  # a caller that goes away
                await leave(bus, key, {field: n})
                continue
            try:
                await bus.apply(key, Patch({field: n}))
            except StoreError as exc:
                failures.append(exc)
                continue
            acknowledged[field] = n
            if len(acknowledged) == 250 and not killed.is_set():
                pid = store.writer_pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for w in range(30):
                tg.start_soon(writer, w)
    assert killed.is_set() and failures  # the kill cost some writes their commit
    assert len(acknowledged) + len(failures) == 30 * 34  # the others' callers left
    await writer_idle(store)  # the outcomes of the writes nobody waits for
    assert not bus._abandoned and not bus._told  # every outcome was taken
    shown = (await bus.read(key))[0]
    assert {field: shown.get(field) for field in acknowledged} == acknowledged
    await node.stop()
    await node.start()
    assert (await node.running.bus.read(key))[0] == shown


async def test_a_write_whose_caller_left_and_whose_commit_failed_shows_nowhere(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller goes away while its write is on its way to disk, and the commit then
    fails in the writer process. Nobody waits for that outcome, but the Doc held the
    write: the node must drop it, not go on showing (and building on) a value the
    disk never had."""
    node = await node_factory()
    bus = node.running.bus
    key = parse_key("/left", bus.own)
    await bus.apply(key, Patch({"a": 1}))
    broken = fail_batches(monkeypatch)  # the next batch, the leaving write's
    store = bus._store
    assert isinstance(store, SQLiteStore)
    await leave(bus, key, {"gone": 2})
    assert broken == [1]  # it was handed to the writer before its caller left
    await writer_idle(store)  # the outcome of the batch nobody waits for
    assert (await bus.read(key))[0] == {"a": 1}
    await bus.apply(key, Patch({"b": 3}))
    assert (await bus.read(key))[0] == {"a": 1, "b": 3}
    assert not bus._abandoned and not bus._told  # every outcome was taken
    await node.stop()
    await node.start()
    assert (await node.running.bus.read(key))[0] == {"a": 1, "b": 3}


async def test_a_failed_write_to_a_sealed_document_keeps_nothing_for_its_event(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sealed document's write keeps its plain update for its event until it commits;
    a write whose commit fails has no event, and must not leave that behind."""
    node = await node_factory()
    bus = node.running.bus
    key = parse_key("/sealed", bus.own)
    await bus.apply(key, Patch({"a": 1}), encrypt_to=frozenset())
    fail_batches(monkeypatch, count=None)
    for n in range(3):
        try:
            await bus.apply(key, Patch({"b": n}))
        except StoreError:
            pass
        else:
            raise AssertionError("the write was stored with nothing to sign it with")
    assert not bus._plain and not bus._values and not bus._origins
    monkeypatch.undo()
    assert (await bus.read(key))[0] == {"a": 1}


async def test_concurrent_first_reads_load_a_document_once(node: Node) -> None:
    bus = node.running.bus
    await bus.apply(parse_key("/once", bus.own), PutValue({"a": 1}))
    await node.stop()
    await node.start()
    bus = node.running.bus
    before = bus.stats().live_docs
    results: list[Any] = []
    async with node.client() as client:

        async def read() -> None:
            results.append((await client.get("/once", headers=JSON)).json())

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(read)
    assert results == [{"a": 1}] * 20
    assert bus.stats().live_docs == before + 1


async def test_stream_of_a_never_written_folder_is_just_synced(client: httpx.AsyncClient) -> None:
    reader, stream = await open_stream(client, "/empty/")
    try:
        synced = await reader.data()
        assert synced.event == "synced"
    finally:
        await stream.aclose()


async def test_idle_streams_do_not_keep_a_big_documents_state(node: Node) -> None:
    """Each stream sends the whole state first; none may keep it while it idles."""
    bus = node.running.bus
    await bus.apply(parse_key("/big", bus.own), PutValue({"blob": "b" * 500_000}))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        streams = []
        for _ in range(40):  # 40 × (500 kB of state + its base64) would be ~50 MB
            sock = await anyio.connect_tcp("127.0.0.1", node.port)
            auth = f"Authorization: Bearer {node.token}"
            await sock.send(f"GET /big HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n".encode())
            received = b""
            with anyio.fail_after(10):
                while b'"version"' not in received:  # the whole first event has arrived
                    received += await sock.receive(1 << 20)
            streams.append(sock)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 8 * 1024 * 1024, f"40 idle streams hold {growth} bytes"
    for sock in streams:
        await sock.aclose()


def test_compaction_of_a_big_document_costs_each_write_a_bounded_share() -> None:
    """Small writes to a document whose snapshot is 1 MiB: compacted once the tail
    holds one entry per 256 snapshot bytes (not every 2,048 writes, which would
    re-encode a growing document ever more often), and a small document still
    every 2,048 small writes at most."""
    live = LiveDoc("/~n/big", Doc(), 0, DocLog())
    live.snapshot_bytes = 1 << 20
    live.tail_entries, live.tail_bytes = 4096, 4096 * 30
    assert not live.wants_compaction(512)
    live.tail_entries += 1
    assert live.wants_compaction(512)
    small = LiveDoc("/~n/small", Doc(), 0, DocLog())
    small.snapshot_bytes = 100_000
    small.tail_entries, small.tail_bytes = 2048, 2048 * 10
    assert not small.wants_compaction(512)
    small.tail_entries += 1
    assert small.wants_compaction(512)
    small.tail_entries, small.tail_bytes = 600, 25_000  # a quarter of the snapshot
    assert small.wants_compaction(512)


async def test_a_clean_stop_leaves_a_busy_key_as_one_snapshot(node_factory: NodeFactory) -> None:
    """Below the compaction threshold a key's entries stay as they are while the node
    runs; a clean stop folds them into one signed snapshot, so the next start opens
    the key from it alone, with the same value and version. A key with only a few
    entries is left alone."""
    node = await node_factory(compact_after=40)
    bus = node.running.bus
    await write_many(node, "/tail", 30, writers=5, apart=True)
    key = parse_key("/tail", bus.own)
    await bus.apply(key, Patch({"after": True}))  # a write after the concurrent ones
    await bus.apply(parse_key("/few", bus.own), Patch({"a": 1}))
    canonical, few = f"/~{bus.own}/tail", f"/~{bus.own}/few"
    assert len((await bus._store.load(canonical)).entries) == 31
    async with node.client() as client:
        before = await client.get("/tail", headers=JSON)
    store_path = node.settings.data_dir
    await node.stop()
    from statebus.identity import verify_entry
    from statebus.store import SQLiteStore

    async with SQLiteStore(store_path / "statebus.db") as store:
        log = await store.load(canonical)
        assert [(e.snapshot, e.seq) for e in log.entries] == [(True, log.head)]
        verify_entry(bus.own, bus.own, "/tail", log.entries[0].update, log.entries[0].signature)
        assert len((await store.load(few)).entries) == 1
        assert not (await store.load(few)).entries[0].snapshot
    await node.start()
    async with node.client() as client:
        after = await client.get("/tail", headers=JSON)
    assert after.json() == before.json() and after.json()["after"] is True
    assert after.headers["Version"] == before.headers["Version"]


async def test_a_clean_stop_folds_many_busy_keys_in_a_few_commits(
    node_factory: NodeFactory,
) -> None:
    """The snapshots at close go to the store together: a node with many busy documents
    stops with a few group commits, not an fsync per document."""
    node = await node_factory(compact_after=40)
    bus = node.running.bus
    paths = [f"/busy/{n}" for n in range(40)]

    async def write(path: str) -> None:
        for i in range(12):  # a tail of 12: past a quarter of compact_after
            await bus.apply(parse_key(path, bus.own), Patch({"i": i}))

    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(write, path)
    store = bus._store
    commits = store.stats.commits
    await node.stop()
    assert store.stats.commits - commits < len(paths) // 4
    from statebus.store import SQLiteStore

    async with SQLiteStore(node.settings.data_dir / "statebus.db") as reopened:
        for path in paths:
            log = await reopened.load(f"/~{bus.own}{path}")
            assert [e.snapshot for e in log.entries] == [True], path
