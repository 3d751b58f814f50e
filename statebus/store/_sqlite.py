"""The embedded store: SQLite in WAL mode, one writer thread, group commit.

Every append waits for the fsync of the transaction that holds it; appends that
arrive while a commit is in flight are batched into the next one, so a busy
node pays one fsync per batch, not per request. Reads use their own
connections in worker threads (WAL readers never block the writer), so no
SQLite call ever runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..errors import StoreError
from . import CommitListener, DocLog, Entry, KeyInfo, Store, StoreStats

log = logging.getLogger(__name__)

# A log entry appears once per document: the UNIQUE index on (doc, signature)
# makes a replayed entry an INSERT OR IGNORE no-op. Keyed by document first, a
# batch's index writes land on a few pages per document instead of one random
# page per entry (as a UNIQUE on the random signature alone did), which halves
# what a big log's commits write.
ENTRIES_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY,
    doc INTEGER NOT NULL REFERENCES docs(id),
    author TEXT NOT NULL,
    signature BLOB NOT NULL,
    body BLOB NOT NULL,
    snapshot INTEGER NOT NULL,
    grant_ BLOB
);
"""
ENTRIES_INDEXES = """
CREATE INDEX IF NOT EXISTS entries_by_doc ON entries(doc, seq);
CREATE UNIQUE INDEX IF NOT EXISTS entries_once ON entries(doc, signature);
"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    head INTEGER NOT NULL,
    present INTEGER NOT NULL,
    log_entries INTEGER NOT NULL,
    log_bytes INTEGER NOT NULL,
    sealed INTEGER NOT NULL DEFAULT 0
);
""" + ENTRIES_TABLE.format(name="entries")

MAX_BATCH = 1024


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """sqlite3's errors stop here and become StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"storage failed while {action}: {exc}") from exc


def _signature_unique_alone(conn: sqlite3.Connection) -> bool:
    """Whether ``entries`` still carries the old UNIQUE constraint on its signature
    column (an automatic index SQLite cannot drop without rebuilding the table)."""
    for _seq, name, _unique, origin, _partial in conn.execute("PRAGMA index_list(entries)"):
        if origin == "u":
            columns = [row[2] for row in conn.execute(f"PRAGMA index_info('{name}')")]
            if columns == ["signature"]:
                return True
    return False


def _rebuild_entries(conn: sqlite3.Connection) -> None:
    """Copy ``entries`` into a table without the old constraint, in one transaction
    (a crash midway leaves the old table whole); once per database."""
    log.info("rebuilding the entries table without its signature-only index (once)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(ENTRIES_TABLE.format(name="entries_rebuilt"))
        conn.execute(
            "INSERT INTO entries_rebuilt(seq, doc, author, signature, body, snapshot, grant_) "
            "SELECT seq, doc, author, signature, body, snapshot, grant_ FROM entries"
        )
        conn.execute("DROP TABLE entries")
        conn.execute("ALTER TABLE entries_rebuilt RENAME TO entries")
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise


def folder_bounds(folder: str) -> tuple[str, str]:
    """The key range [low, high) that holds every key under ``folder``."""
    return folder, folder[:-1] + chr(ord("/") + 1)


class _Job:
    __slots__ = ("entries", "error", "future", "messages", "stored", "upto")

    def __init__(
        self,
        entries: Sequence[Entry],
        future: asyncio.Future[list[Entry]],
        upto: int = -1,
        messages: Mapping[Entry, bytes] | None = None,
    ) -> None:
        self.entries = entries
        self.messages = messages  # what to sign, for entries not signed yet
        self.future = future
        self.upto = upto  # >= 0: a compaction up to this seq
        self.stored: list[Entry] = []
        self.error: StoreError | None = None


class SQLiteStore(Store):
    """Owns the database file, its writer thread and its reader connections."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 10_000,
        synchronous: str = "FULL",
    ):
        self._path = path
        self._signer: Callable[[bytes], bytes] | None = None  # see use_signer
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._listener: CommitListener | None = None
        self._pending: asyncio.Semaphore = asyncio.Semaphore(max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._doc_ids: dict[str, int] = {}
        self._next_seq = 1
        self._commits = 0
        self._entries = 0
        self._state = "new"

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"SQLiteStore cannot open when {self._state}")
        self._state = "opening"
        self._loop = asyncio.get_running_loop()
        conn = await anyio.to_thread.run_sync(self._open_writer)
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="statebus-store-writer", daemon=True
        )
        self._writer.start()
        self._state = "open"

    async def close(self) -> None:
        if self._state != "open":
            return
        self._state = "closed"
        self._queue.put(None)
        writer = self._writer
        if writer is not None:
            await anyio.to_thread.run_sync(writer.join)
        with self._readers_lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    def _open_writer(self) -> sqlite3.Connection:
        with _translated(f"opening {self._path}"):
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(docs)")}
            if "sealed" not in columns:  # a database made before sealed documents
                conn.execute("ALTER TABLE docs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0")
            entry_columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
            if "grant_" not in entry_columns:  # a database made before write grants
                conn.execute("ALTER TABLE entries ADD COLUMN grant_ BLOB")
            if _signature_unique_alone(conn):  # made before entries_once
                _rebuild_entries(conn)
            conn.executescript(ENTRIES_INDEXES)
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
            self._next_seq = int(row[0]) + 1
            return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False)
            self._readers.conn = conn
            with self._readers_lock:
                self._reader_connections.append(conn)
        return conn

    async def _read(self, action: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._state != "open":
            raise StoreError(f"the store is {self._state}")

        def run() -> Any:
            with _translated(action):
                return fn(self._reader())

        return await anyio.to_thread.run_sync(run)

    # -- writes ------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:
        return StoreStats(self._commits, self._entries)

    def use_signer(self, signer: Callable[[bytes], bytes]) -> None:
        self._signer = signer

    def listen(self, listener: CommitListener) -> None:
        self._listener = listener

    async def append(
        self, entries: Sequence[Entry], *, messages: Mapping[Entry, bytes] | None = None
    ) -> list[Entry]:
        if not entries:
            return []
        return await self._submit(entries, -1, messages)

    async def compact(self, snapshot: Entry, upto: int) -> None:
        await self._submit([snapshot], upto)

    async def _submit(
        self, entries: Sequence[Entry], upto: int, messages: Mapping[Entry, bytes] | None = None
    ) -> list[Entry]:
        if self._state != "open" or self._loop is None:
            raise StoreError(f"the store is {self._state}")
        await self._pending.acquire()
        future: asyncio.Future[list[Entry]] = self._loop.create_future()
        self._queue.put(_Job(entries, future, upto, messages))
        # Not shielded: a cancelled caller cancels only its wait; the writer thread
        # commits the job anyway, and _finish skips a future that is done.
        return await future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is None:
                break
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    running = False
                    break
                jobs.append(job)
            self._commit(conn, jobs)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._finish, jobs)
            except RuntimeError:  # the loop is gone: nobody waits any more
                log.warning("store writer finished a batch after the event loop closed")
        conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        first_seq = self._next_seq
        try:
            conn.execute("BEGIN IMMEDIATE")
            appends: list[_Job] = []
            for job in jobs:  # appends in runs, compactions in their place between them
                if job.upto >= 0:
                    self._write_appends(conn, appends)
                    appends = []
                    self._write_snapshot(conn, job)
                else:
                    appends.append(job)
            self._write_appends(conn, appends)
            conn.execute("COMMIT")
            self._commits += 1
            self._entries += sum(len(job.stored) for job in jobs)
        except (sqlite3.Error, StoreError) as exc:
            log.error("store commit of %d jobs failed: %s", len(jobs), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._next_seq = first_seq
            self._doc_ids.clear()  # ids made in the failed transaction are gone
            error = StoreError(f"storage failed while committing: {exc}")
            for job in jobs:
                job.stored = []
                job.error = error

    def _doc_id(self, conn: sqlite3.Connection, key: str) -> int:
        doc_id = self._doc_ids.get(key)
        if doc_id is None:
            row = conn.execute("SELECT id FROM docs WHERE key = ?", (key,)).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO docs(key, head, present, log_entries, log_bytes) "
                    "VALUES (?, 0, 0, 0, 0)",
                    (key,),
                )
                doc_id = int(cursor.lastrowid or 0)
            else:
                doc_id = int(row[0])
            if len(self._doc_ids) > 100_000:
                self._doc_ids.clear()
            self._doc_ids[key] = doc_id
        return doc_id

    def _write_appends(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """All the appends of a batch in two statements (executemany): the writer
        thread holds the GIL for its Python work, so less of it is less of the
        event loop's time lost."""
        rows: list[tuple[int, int, str, bytes, bytes, int, bytes | None]] = []
        placed: list[tuple[_Job, Entry, int, int]] = []
        for job in jobs:
            for entry in job.entries:
                if not entry.signature:
                    entry.signature = self._sign(job, entry)
                seq, doc_id = self._next_seq, self._doc_id(conn, entry.key)
                self._next_seq += 1
                rows.append(
                    (
                        seq,
                        doc_id,
                        entry.author,
                        entry.signature,
                        entry.update,
                        int(entry.snapshot),
                        entry.grant or None,
                    )
                )
                placed.append((job, entry, seq, doc_id))
        if not rows:
            return
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO entries(seq, doc, author, signature, body, snapshot, grant_) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        inserted: set[int] | None = None  # None: every row went in (no replays)
        if conn.total_changes - before != len(rows):
            found = conn.execute(
                "SELECT seq FROM entries WHERE seq BETWEEN ? AND ?", (rows[0][0], rows[-1][0])
            )
            inserted = {row[0] for row in found}
        # doc id -> [head, present, entries, bytes, sealed]
        docs: dict[int, list[int]] = {}
        for job, entry, seq, doc_id in placed:
            if inserted is not None and seq not in inserted:
                continue  # a replay: that signature is stored already
            entry.seq = seq
            job.stored.append(entry)
            totals = docs.get(doc_id)
            if totals is None:
                docs[doc_id] = [seq, int(entry.exists), 1, len(entry.update), int(entry.sealed)]
            else:
                totals[0], totals[1] = seq, int(entry.exists)
                totals[2] += 1
                totals[3] += len(entry.update)
                totals[4] |= int(entry.sealed)
        conn.executemany(
            "UPDATE docs SET head = ?, present = ?, log_entries = log_entries + ?, "
            "log_bytes = log_bytes + ?, sealed = MAX(sealed, ?) WHERE id = ?",
            [
                (head, present, count, size, sealed, doc_id)
                for doc_id, (head, present, count, size, sealed) in docs.items()
            ],
        )

    def _sign(self, job: _Job, entry: Entry) -> bytes:
        """Sign an entry this node authors, here in the writer thread (the signer
        releases the GIL: the event loop goes on meanwhile)."""
        if self._signer is None or job.messages is None or entry not in job.messages:
            raise StoreError(f"an entry of {entry.key} came unsigned, with nothing to sign it")
        return self._signer(job.messages[entry])

    def _write_snapshot(self, conn: sqlite3.Connection, job: _Job) -> None:
        (snapshot,) = job.entries
        doc_id = self._doc_id(conn, snapshot.key)
        conn.execute("DELETE FROM entries WHERE doc = ? AND seq <= ?", (doc_id, job.upto))
        conn.execute(
            "INSERT INTO entries(seq, doc, author, signature, body, snapshot) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            (job.upto, doc_id, snapshot.author, snapshot.signature, snapshot.update),
        )
        conn.execute(
            "UPDATE docs SET (log_entries, log_bytes) = "
            "(SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM entries WHERE doc = ?) "
            "WHERE id = ?",
            (doc_id, doc_id),
        )
        snapshot.seq = job.upto

    def _finish(self, jobs: list[_Job]) -> None:
        stored = [entry for job in jobs for entry in job.stored if job.upto < 0]
        if stored and self._listener is not None:
            try:
                self._listener(stored)
            except Exception:
                log.exception("commit listener failed")
        for job in jobs:
            self._pending.release()
            if job.future.done():
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.stored)

    # -- reads -------------------------------------------------------------

    async def load(self, key: str) -> DocLog:
        def run(conn: sqlite3.Connection) -> DocLog:
            doc = conn.execute(
                "SELECT id, head, present FROM docs WHERE key = ?", (key,)
            ).fetchone()
            if doc is None:
                return DocLog()
            rows = conn.execute(
                "SELECT seq, author, signature, body, snapshot, grant_ FROM entries "
                "WHERE doc = ? ORDER BY seq",
                (doc[0],),
            ).fetchall()
            entries = [
                Entry(key, r[3], r[1], r[2], bool(r[4]), True, r[0], grant=r[5] or b"")
                for r in rows
            ]
            return DocLog(entries, int(doc[1]), bool(doc[2]))

        result: DocLog = await self._read(f"loading {key}", run)
        return result

    async def entries_after(
        self, key: str, after: int, *, folder: bool = False, limit: int = 1000
    ) -> list[Entry]:
        def run(conn: sqlite3.Connection) -> list[Entry]:
            if folder:
                low, high = folder_bounds(key)
                rows = conn.execute(
                    "SELECT e.seq, d.key, e.author, e.signature, e.body, e.snapshot, d.present, "
                    "e.grant_ "
                    "FROM entries e JOIN docs d ON e.doc = d.id "
                    "WHERE e.seq > ? AND d.key >= ? AND d.key < ? ORDER BY e.seq LIMIT ?",
                    (after, low, high, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT e.seq, d.key, e.author, e.signature, e.body, e.snapshot, d.present, "
                    "e.grant_ "
                    "FROM entries e JOIN docs d ON e.doc = d.id "
                    "WHERE d.key = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
                    (key, after, limit),
                ).fetchall()
            return [
                Entry(r[1], r[4], r[2], r[3], bool(r[5]), bool(r[6]), r[0], grant=r[7] or b"")
                for r in rows
            ]

        result: list[Entry] = await self._read(f"reading the log of {key}", run)
        return result

    async def keys(
        self, folder: str, *, after: str = "", limit: int = 1000, deleted: bool = False
    ) -> list[KeyInfo]:
        low, high = folder_bounds(folder)

        def run(conn: sqlite3.Connection) -> list[KeyInfo]:
            rows = conn.execute(
                "SELECT key, head, present, log_entries, log_bytes FROM docs "
                "WHERE key >= ? AND key < ? AND key > ? AND (present = 1 OR ?) "
                "ORDER BY key LIMIT ?",
                (low, high, after, int(deleted), limit),
            ).fetchall()
            return [KeyInfo(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

        result: list[KeyInfo] = await self._read(f"listing {folder}", run)
        return result

    async def sealed_keys(self) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("SELECT key FROM docs WHERE sealed = 1")]

        result: list[str] = await self._read("listing sealed documents", run)
        return result

    async def info(self, key: str) -> KeyInfo | None:
        def run(conn: sqlite3.Connection) -> KeyInfo | None:
            r = conn.execute(
                "SELECT key, head, present, log_entries, log_bytes FROM docs WHERE key = ?",
                (key,),
            ).fetchone()
            return None if r is None else KeyInfo(r[0], r[1], bool(r[2]), r[3], r[4])

        result: KeyInfo | None = await self._read(f"reading {key}", run)
        return result

    async def head(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0])

        result: int = await self._read("reading the head", run)
        return result
