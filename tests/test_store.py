"""The SQLite store: durable appends, group commit, replays, compaction, reads."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Map

from statebus.errors import StoreError
from statebus.store import Entry, SQLiteStore


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
