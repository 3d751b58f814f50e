"""The SQLite store: durable appends, group commit, replays, compaction, reads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import nacl.bindings
import nacl.signing
import pytest
from pycrdt import Doc, Map

from statebus.errors import StoreError
from statebus.store import Entry, SQLiteStore
from tests.processes import exited
from tests.wait import eventually


def entry(key: str, n: int, *, exists: bool = True) -> Entry:
    doc: Doc[Any] = Doc()
    doc.get("data", type=Map)["n"] = float(n)
    return Entry(key, doc.get_update(), "author", os.urandom(64), exists=exists)


async def test_appends_are_numbered_in_order_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStore(path) as store:
        stored = await store.append([entry("/~n/a", 1), entry("/~n/b", 2), entry("/~n/a", 3)])
        assert [e.seq for e in stored] == [1, 2, 3]
        assert await store.head() == 3
    async with SQLiteStore(path) as store:
        log = await store.load("/~n/a")
        assert [e.seq for e in log.entries] == [1, 3]
        assert log.head == 3 and log.exists
        more = await store.append([entry("/~n/a", 4)])
        assert more[0].seq == 4


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "db") as store:
        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(store.append, [entry(f"/~n/k{i % 7}", i)])
        assert store.stats.entries == 300
        assert store.stats.commits < 100, store.stats  # one fsync per batch, not per write
        assert await store.head() == 300


async def test_an_append_whose_caller_left_tells_its_outcome_to_abandoned(
    tmp_path: Path,
) -> None:
    """A cancelled caller stops waiting, not the append: whoever handed it over is told
    the outcome. Also for a caller that left while it waited for room (never stored)."""
    told: dict[str, StoreError | None] = {}
    both = anyio.Event()

    def abandoned(entries: Any, error: StoreError | None) -> None:
        told.update(dict.fromkeys((e.key for e in entries), error))
        if len(told) == 2:
            both.set()

    async def append(key: str, n: int) -> None:
        await store.append([entry(key, n)], abandoned=abandoned)

    async with SQLiteStore(tmp_path / "db", max_pending=1) as store:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(append, "/~n/left", 1)
                await anyio.lowlevel.checkpoint()  # handed to the writer process
                tg.start_soon(append, "/~n/queued", 2)
                await anyio.lowlevel.checkpoint()  # waits for room: one job at a time
                scope.cancel()
        with anyio.fail_after(10):
            await both.wait()
        assert told["/~n/left"] is None  # committed, with nobody waiting for it
        assert isinstance(told["/~n/queued"], StoreError)  # never handed over
        assert len((await store.load("/~n/left")).entries) == 1
        assert (await store.load("/~n/queued")).entries == []


async def test_a_replayed_entry_is_not_stored_twice(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "db") as store:
        original = entry("/~n/a", 1)
        await store.append([original])
        replay = Entry(original.key, original.update, original.author, original.signature)
        assert await store.append([replay]) == []
        assert len((await store.load("/~n/a")).entries) == 1
        assert await store.head() == 1


async def test_the_commit_listener_sees_batches_in_seq_order(tmp_path: Path) -> None:
    seen: list[int] = []
    async with SQLiteStore(tmp_path / "db") as store:
        store.listen(lambda entries: seen.extend(e.seq for e in entries))
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(store.append, [entry("/~n/a", i)])
    assert seen == list(range(1, 101))


async def test_compaction_replaces_a_prefix_with_one_snapshot(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "db") as store:
        for i in range(10):
            await store.append([entry("/~n/a", i)])
        snapshot = Entry("/~n/a", b"\x00\x00", "author", os.urandom(64), snapshot=True)
        await store.compact(snapshot, 7)
        log = await store.load("/~n/a")
        assert [(e.seq, e.snapshot) for e in log.entries] == [
            (7, True),
            (8, False),
            (9, False),
            (10, False),
        ]
        info = await store.info("/~n/a")
        assert info is not None and info.log_entries == 4
        assert [e.seq for e in await store.entries_after("/~n/a", 5)] == [7, 8, 9, 10]


async def test_an_unsigned_snapshot_is_signed_by_the_writer_process(tmp_path: Path) -> None:
    public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    async with SQLiteStore(tmp_path / "db") as store:
        store.use_signer(secret)
        for i in range(5):
            await store.append([entry("/~n/a", i)])
        state = os.urandom(300_000)  # a big snapshot: hashing it is off the loop
        snapshot = Entry("/~n/a", state, "author", b"", snapshot=True)
        await store.compact(snapshot, 5, message=b"message of the snapshot" + state)
        log = await store.load("/~n/a")
    assert [(e.seq, e.snapshot) for e in log.entries] == [(5, True)]
    assert log.entries[0].signature == snapshot.signature
    nacl.signing.VerifyKey(public).verify(
        b"message of the snapshot" + state, log.entries[0].signature
    )  # raises if wrong


async def test_reads_by_key_folder_and_listing(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "db") as store:
        await store.append(
            [
                entry("/~n/posts/a", 1),
                entry("/~n/posts/deep/b", 2),
                entry("/~n/postscript", 3),
                entry("/~n/posts/gone", 4, exists=False),
                entry("/~m/posts/a", 5),
            ]
        )
        folder = await store.entries_after("/~n/posts/", 1, folder=True)
        assert [(e.key, e.seq) for e in folder] == [("/~n/posts/deep/b", 2), ("/~n/posts/gone", 4)]
        keys = await store.keys("/~n/posts/")
        assert [k.key for k in keys] == ["/~n/posts/a", "/~n/posts/deep/b"]
        page = await store.keys("/~n/", after="/~n/posts/a", limit=1)
        assert [k.key for k in page] == ["/~n/posts/deep/b"]
        assert await store.info("/~n/nothing") is None
        assert (await store.load("/~n/nothing")).entries == []


async def test_an_unusable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()  # a directory where the file should be
    with pytest.raises(StoreError, match="opening"):
        async with SQLiteStore(tmp_path / "db"):
            pass


async def test_a_store_opens_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    async with store:
        with pytest.raises(RuntimeError):
            await store.open()
    with pytest.raises(StoreError):
        await store.append([entry("/~n/a", 1)])


OLD_SCHEMA = """
CREATE TABLE docs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, head INTEGER NOT NULL,
    present INTEGER NOT NULL, log_entries INTEGER NOT NULL, log_bytes INTEGER NOT NULL);
CREATE TABLE entries (seq INTEGER PRIMARY KEY, doc INTEGER NOT NULL REFERENCES docs(id),
    author TEXT NOT NULL, signature BLOB NOT NULL UNIQUE, body BLOB NOT NULL,
    snapshot INTEGER NOT NULL);
CREATE INDEX entries_by_doc ON entries(doc, seq);
"""


async def test_a_database_from_before_per_document_uniqueness_keeps_its_log(
    tmp_path: Path,
) -> None:
    """A data directory written by an older statebus (a UNIQUE signature column, no
    grant_ or sealed columns) opens with every entry, and still refuses replays."""
    path = tmp_path / "db"
    old = [entry("/~n/a", 1), entry("/~n/b", 2), entry("/~n/a", 3)]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO docs VALUES (1, '/~n/a', 3, 1, 2, 0), (2, '/~n/b', 2, 1, 1, 0)")
        conn.executemany(
            "INSERT INTO entries VALUES (?, ?, 'author', ?, ?, 0)",
            [
                (seq, 2 if e.key == "/~n/b" else 1, e.signature, e.update)
                for seq, e in enumerate(old, 1)
            ],
        )
    async with SQLiteStore(path) as store:
        log = await store.load("/~n/a")
        assert [(e.seq, e.update, e.signature) for e in log.entries] == [
            (1, old[0].update, old[0].signature),
            (3, old[2].update, old[2].signature),
        ]
        replay = Entry("/~n/a", old[0].update, "author", old[0].signature)
        assert await store.append([replay]) == []
        (new,) = await store.append([entry("/~n/b", 4)])
        assert new.seq > 3
    async with SQLiteStore(path) as store:  # and it opens again as it is now
        assert [e.seq for e in (await store.load("/~n/b")).entries] == [2, new.seq]
        assert await store.head() == new.seq


async def test_a_killed_writer_process_fails_its_batch_and_a_new_one_takes_over(
    tmp_path: Path,
) -> None:
    """The writer process dies (kill -9): what it held fails loudly, nothing already
    acknowledged is lost, and the next write starts a new process."""
    async with SQLiteStore(tmp_path / "db") as store:
        first = await store.append([entry("/~n/a", 1)])
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(StoreError, match="writer process stopped"):
            await store.append([entry("/~n/a", 2)])
        third = await store.append([entry("/~n/a", 3)])
        assert store.writer_pid not in (None, pid)
        updates = [e.update for e in (await store.load("/~n/a")).entries]
        assert updates == [first[0].update, third[0].update]
        assert third[0].seq == 2  # numbered on from what the disk holds


async def test_closing_commits_what_was_submitted(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStore(path) as store:
        writes = [asyncio.ensure_future(store.append([entry("/~n/a", i)])) for i in range(50)]
        await asyncio.sleep(0)  # every append is queued
    assert all(len(w.result()) == 1 for w in writes)
    async with SQLiteStore(path) as store:
        assert len((await store.load("/~n/a")).entries) == 50


async def test_the_writer_process_signs_what_comes_unsigned_behind_its_commit(
    tmp_path: Path,
) -> None:
    """An append is acknowledged once durable, perhaps before it is signed; each entry
    then reaches the listener of signed entries once, with its own signature, and
    signed() leaves none unsigned in the log."""
    seed = os.urandom(32)
    public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    async with SQLiteStore(tmp_path / "db") as store:
        store.use_signer(secret)
        told: list[Entry] = []
        store.listen_signed(told.extend)
        unsigned = [Entry("/~n/a", f"update {i}".encode(), "author", b"") for i in range(300)]
        messages = {e: b"message of " + e.update for e in unsigned}
        stored: list[Entry] = []

        async def append(entries: list[Entry]) -> None:
            stored.extend(await store.append(entries, messages=messages))

        async with anyio.create_task_group() as tg:  # many batches, one after another
            for i in range(0, 300, 3):
                tg.start_soon(append, unsigned[i : i + 3])
        await store.signed()
        log = await store.load("/~n/a")
        assert sorted(e.seq for e in told) == sorted(e.seq for e in stored)  # each one once
        last = [Entry("/~n/a", b"last", "author", b"")]
        await store.append(last, messages={last[0]: b"message of last"})
    assert len(log.entries) == 300
    with contextlib.closing(sqlite3.connect(tmp_path / "db")) as conn:  # a clean stop
        rows = conn.execute("SELECT signature, message FROM entries").fetchall()
    assert len(rows) == 301 and all(len(sig) == 64 and m is None for sig, m in rows)
    by_seq = {e.seq: e for e in stored}
    for entry in log.entries:
        assert entry.signature == by_seq[entry.seq].signature
        # raises if the signature is not of this entry's own message
        nacl.signing.VerifyKey(public).verify(b"message of " + entry.update, entry.signature)


async def test_appends_are_durable_before_there_is_a_key_and_signed_once_it_comes(
    tmp_path: Path,
) -> None:
    """Signing never holds up durability: with no key yet, appends commit, read back
    unsigned and reach no listener of signed entries (up to a bound, then they are
    refused); the key signs them."""
    public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    path = tmp_path / "db"
    async with SQLiteStore(path) as store:
        told: list[Entry] = []
        store.listen_signed(told.extend)
        mine = [Entry("/~n/a", f"mine {i}".encode(), "author", b"") for i in range(3)]
        theirs = entry("/~n/a", 9)  # a peer's: signed already
        stored = await store.append(
            [mine[0], theirs, *mine[1:]], messages={e: b"m" + e.update for e in mine}
        )
        assert [e.seq for e in stored] == [1, 2, 3, 4]
        assert told == [theirs]
        await store.signed()  # nothing to sign with: returns, signs nothing
        log = await store.load("/~n/a")
        assert [bool(e.signature) for e in log.entries] == [False, True, False, False]
        many = [Entry("/~n/b", b"%d" % i, "author", b"") for i in range(1021)]
        await store.append(many, messages={e: b"m" + e.update for e in many})
        with pytest.raises(StoreError, match="1024 entries wait for a key"):  # bounded
            await store.append(mine[:1], messages={mine[0]: b"again"})
        store.use_signer(secret)
        await store.signed()
        assert sorted(e.seq for e in told) == list(range(1, 1026))
        log = await store.load("/~n/a")
    for got in [log.entries[0], *log.entries[2:]]:
        nacl.signing.VerifyKey(public).verify(b"m" + got.update, got.signature)
    async with SQLiteStore(path) as store:  # and a restart keeps them so
        assert [e.signature for e in (await store.load("/~n/a")).entries] == [
            e.signature for e in log.entries
        ]


async def test_a_writer_process_killed_before_it_signed_leaves_nothing_unsigned(
    tmp_path: Path,
) -> None:
    """kill -9 of the writer process while committed entries wait for their signatures:
    a new one starts by itself and signs them, and each still reaches the listener of
    signed entries once, with its own signature."""
    public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    verify = nacl.signing.VerifyKey(public).verify
    async with SQLiteStore(tmp_path / "db") as store:
        store.use_signer(secret)
        told: list[Entry] = []
        store.listen_signed(told.extend)
        stored: list[Entry] = []
        killed_waiting = 0
        for attempt in range(20):
            batch = [Entry("/~n/a", f"{attempt}/{i}".encode(), "author", b"") for i in range(300)]
            stored += await store.append(batch, messages={e: b"m" + e.update for e in batch})
            pid = store.writer_pid
            assert pid is not None
            if store._unsigned:  # some of this batch still wait (300 take ~6 ms to sign)
                killed_waiting += 1
                os.kill(pid, signal.SIGKILL)
                gone = pid  # seen gone, and replaced with no write to do
                await eventually(lambda: store.writer_pid not in (None, gone))  # noqa: B023
            if killed_waiting == 3:
                break
        assert killed_waiting == 3
        await eventually(lambda: len(told) >= len(stored), within=20)
        assert sorted(e.seq for e in told) == [e.seq for e in stored]
        for entry in told:
            verify(b"m" + entry.update, entry.signature)
        log = await store.load("/~n/a")
    assert [(e.seq, e.signature) for e in log.entries] == [(e.seq, e.signature) for e in stored]


async def test_entries_a_crash_left_unsigned_are_signed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A crash between an entry's commit and its signature leaves the entry durable
    with what to sign; it reads as unsigned until the next writer process signs it."""
    public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    path = tmp_path / "db"
    entries = [Entry("/~n/a", f"update {i}".encode(), "author", b"") for i in range(5)]
    messages = {e: b"message of " + e.update for e in entries}
    async with SQLiteStore(path) as store:
        store.use_signer(secret)
        await store.append(entries, messages=messages)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        # as a kill -9 right after the commit leaves them (_writer.UNSIGNED)
        for seq in (2, 4):
            conn.execute(
                "UPDATE entries SET signature = ?, message = ? WHERE seq = ?",
                (b"statebus/unsigned/" + seq.to_bytes(8, "big"), messages[entries[seq - 1]], seq),
            )
    async with SQLiteStore(path) as store:
        log = await store.load("/~n/a")
        assert [bool(e.signature) for e in log.entries] == [True, False, True, False, True]
        store.use_signer(secret)
        await store.signed()
        log = await store.load("/~n/a")
    for entry in log.entries:
        nacl.signing.VerifyKey(public).verify(b"message of " + entry.update, entry.signature)


async def test_an_entry_with_nothing_to_sign_fails_its_batch_alone(tmp_path: Path) -> None:
    """The writer process reads a batch while the one before it commits; a batch with
    an entry it could never sign is refused whole (nothing of it stored), and the
    batches around it are stored as usual."""
    _public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    async with SQLiteStore(tmp_path / "db") as store:
        store.use_signer(secret)
        signed = Entry("/~n/a", b"first", "author", b"")
        before = await store.append([signed], messages={signed: b"first"})
        unsignable = [Entry("/~n/a", b"no message", "author", b"")]
        with pytest.raises(StoreError, match="nothing to sign"):
            await store.append(unsignable)
        after = Entry("/~n/a", b"after", "author", b"")
        await store.append([after], messages={after: b"after"})
        log = await store.load("/~n/a")
    assert [e.update for e in log.entries] == [b"first", b"after"]
    assert log.entries[0].seq == before[0].seq and log.entries[1].seq == before[0].seq + 1


async def test_big_concurrent_appends_keep_their_outcomes_in_order(tmp_path: Path) -> None:
    """Batches go to the writer process from two places (a request's own task when
    the writer is idle or enough jobs wait, else the sending task, which may wait
    for a full pipe to drain); with some updates big enough to fill the pipe, each
    job must still get its own outcome: its own entries, in order."""
    async with SQLiteStore(tmp_path / "db") as store:
        results: dict[int, list[Entry]] = {}

        async def append(writer: int) -> None:
            for n in range(writer, 2000, 40):  # each writer's next write once one is in
                size = 300_000 if writer == 0 else 100
                entry = Entry(f"/~n/k{n % 7}", bytes([n % 251]) * size, "author", b"s%d" % n)
                results[n] = await store.append([entry])

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for writer in range(40):
                    tg.start_soon(append, writer)
        for n, stored in results.items():
            assert len(stored) == 1 and stored[0].signature == b"s%d" % n
            assert stored[0].update[0] == n % 251
        seqs = sorted(e.seq for stored in results.values() for e in stored)
        assert seqs == list(range(seqs[0], seqs[0] + 2000))


async def test_a_writer_process_seen_gone_is_replaced_before_the_next_batch(
    tmp_path: Path,
) -> None:
    """A writer process that exits between batches is seen gone at once (its output
    is always read), so the next batch goes to a new one instead of its closed pipe
    (where uvloop raises on a write rather than dropping it)."""
    async with SQLiteStore(tmp_path / "db") as store:
        first, second = entry("/~n/a", 1), entry("/~n/a", 2)
        await store.append([first])
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await exited(pid)
        for _ in range(5):  # the loop's child watcher closes the process's pipes
            await anyio.lowlevel.checkpoint()
        await store.append([second])
        assert store.writer_pid not in (None, pid)
        log = await store.load("/~n/a")
        assert [e.update for e in log.entries] == [first.update, second.update]


async def test_the_writer_process_outlives_signals_to_the_node_s_process_group(
    tmp_path: Path,
) -> None:
    """Ctrl-C or a service manager's SIGTERM reach the whole process group; the writer
    ends with its input instead, so the node can still commit what it holds."""
    async with SQLiteStore(tmp_path / "db") as store:
        await store.append([entry("/~n/a", 1)])
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        await store.append([entry("/~n/a", 2)])  # through the same process
        assert store.writer_pid == pid
    await exited(pid)  # and it ends once the store is closed


def test_a_backlog_the_idle_signer_never_gets_to_is_signed_oldest_first_by_sign_now() -> None:
    """On a machine with no idle time the idle thread never runs: the committing thread
    signs a backlog down to its bound (``BACKLOG // 2`` past ``BACKLOG``), oldest first,
    and everything at a clean stop; with no key yet it signs nothing."""
    from statebus.identity import Identity, entry_message, verify_entry
    from statebus.store._writer import Signer

    woken: list[None] = []
    signer = Signer(lambda: woken.append(None), idle=False)
    identity = Identity.generate()
    updates = {seq: f"update {seq}".encode() for seq in range(1, 11)}
    signer.add([(seq, entry_message(identity.node_id, "/k", u)) for seq, u in updates.items()])
    signer.sign_now(4)
    assert signer.backlog == 10 and signer.take() == []  # no key to sign with yet
    signer.use(identity.signing_secret())
    signer.sign_now(4)
    assert signer.backlog == 4
    first = signer.take()
    assert [seq for seq, _ in first] == [1, 2, 3, 4, 5, 6]
    signer.sign_now(0)
    rest = signer.take()
    assert [seq for seq, _ in rest] == [7, 8, 9, 10] and signer.backlog == 0
    for seq, signature in first + rest:
        verify_entry(identity.node_id, identity.node_id, "/k", updates[seq], signature)
    assert signer.take() == [] and not woken  # only the idle thread wakes the writer
