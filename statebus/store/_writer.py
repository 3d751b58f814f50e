"""The store's writer: a helper process that owns the database's write connection.

:class:`statebus.store.SQLiteStore` runs this file as a script (``python -I``)
and sends it batches of jobs over its stdin; for each batch it writes the
entries in one transaction, fsyncs, and answers over its stdout with what each
job stored. A thread reads the next batch while one commits.

The entries the node authors are signed *behind* the commit (:class:`Signer`):
a write is durable, and acknowledged, with its message stored in place of its
signature, and a thread at idle priority signs it when a core is free. Ed25519
signatures are deterministic, so a signature is never lost, only late: a
restart signs what is left. Signing costs about 20 us of CPU an entry, which
it took from the core the event loop needed; peers, the only readers of
signatures, get an entry once it is signed (``("signed", pairs)`` messages).
A backlog past ``BACKLOG`` is signed at once, at normal priority, so it stays
bounded on a machine with no idle time. Compaction snapshots are signed ahead.

It runs in its own process for the
sake of the GIL: a writer thread in the server's process had to win the GIL
back from the busy event loop after every C call (each signature, each
row), and those waits, not the disk, set how long a group commit took.

It imports nothing of statebus (only the standard library and PyNaCl), so it
starts in a few tens of milliseconds, and it exits at the end of its input: the
node closed the store, or died (``kill -9``), after finishing the batch it
holds. Messages are pickles, each after its u32 little-endian length; the
parent is the only one that writes to it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import signal
import sqlite3
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import nacl.bindings

FRAME = struct.Struct("<I")
SIGNATURE_SIZE = 64
# What stands in an entry's signature column until it is signed: never 64 bytes long,
# and unique per entry (the seq), as the (doc, signature) index needs.
UNSIGNED = b"statebus/unsigned/"
BACKLOG = 1024  # unsigned entries past which the committing thread signs too
SIGN_CHUNK = 8  # entries the idle thread takes at a time

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
    grant_ BLOB,
    message BLOB
);
"""
# ``message``: what to sign, kept only while the entry is unsigned (a partial index
# finds those at start).
ENTRIES_INDEXES = """
CREATE INDEX IF NOT EXISTS entries_by_doc ON entries(doc, seq);
CREATE UNIQUE INDEX IF NOT EXISTS entries_once ON entries(doc, signature);
CREATE INDEX IF NOT EXISTS entries_unsigned ON entries(seq) WHERE message IS NOT NULL;
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

# One entry of a job, as the parent sends it:
# (key, author, signature or b"" when this process signs it, update, snapshot,
#  exists, sealed, grant, message to sign or None)
Row = tuple[str, str, bytes, bytes, bool, bool, bool, bytes, bytes | None]
# A job: (upto, rows); upto >= 0 makes it a compaction (its one row, the snapshot,
# replaces the document's entries up to that seq).
Job = tuple[int, list[Row]]
# What a job stored: per row, (seq, signature), seq 0 for a replay and b"" for a
# signature still to make; or why it failed.
Outcome = list[tuple[int, bytes]] | str


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
    print("statebus store: rebuilding the entries table (once)", file=sys.stderr)
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


def open_database(path: Path, synchronous: str) -> sqlite3.Connection:
    """The write connection, with the schema made or brought up to date."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")  # a previous writer may still be finishing
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(docs)")}
    if "sealed" not in columns:  # a database made before sealed documents
        conn.execute("ALTER TABLE docs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0")
    entry_columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    if "grant_" not in entry_columns:  # a database made before write grants
        conn.execute("ALTER TABLE entries ADD COLUMN grant_ BLOB")
    if "message" not in entry_columns:  # a database made before signing behind
        conn.execute("ALTER TABLE entries ADD COLUMN message BLOB")
    if _signature_unique_alone(conn):  # made before entries_once
        _rebuild_entries(conn)
    conn.executescript(ENTRIES_INDEXES)
    return conn


def signature_of(message: bytes, secret: bytes) -> bytes:
    return bytes(nacl.bindings.crypto_sign(message, secret)[:SIGNATURE_SIZE])


def sign(jobs: list[Job], secret: bytes | None) -> dict[int, bytes]:
    """Signatures of the compaction snapshots this node authors, by ``id(row)``;
    ValueError if a row came unsigned with nothing to sign, or a snapshot with no
    key to sign it with yet. (Appends are signed behind their commit, once there
    is a key.)"""
    signatures: dict[int, bytes] = {}
    for upto, rows in jobs:
        for row in rows:
            if row[2]:
                continue
            message = row[8]
            if message is None:
                raise ValueError(f"an entry of {row[0]} came unsigned, with nothing to sign")
            if upto >= 0:
                if secret is None:
                    raise ValueError(f"no key to sign the snapshot of {row[0]} with")
                signatures[id(row)] = signature_of(message, secret)
    return signatures


def _lower_priority() -> None:
    """This thread runs only when a core would otherwise idle (SCHED_IDLE), or failing
    that at the lowest priority (Linux sets both per thread)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class Signer:
    """The committed entries still to sign, and those signed and not saved yet.

    A thread at idle priority signs the oldest first; :meth:`sign_now` lets the
    committing thread sign too. ``wake`` is called when the idle thread has
    signed everything there was (the committing thread may be waiting for work).
    """

    def __init__(self, wake: Callable[[], None], *, idle: bool = True) -> None:
        self.secret: bytes | None = None
        self._todo: collections.deque[tuple[int, bytes]] = collections.deque()
        self._done: list[tuple[int, bytes]] = []
        self._signing = 0  # entries the idle thread holds
        self._changed = threading.Condition()
        self._wake = wake
        if idle:  # without it, only sign_now signs: a machine with no idle time, as a test
            threading.Thread(target=self._run, name="signer", daemon=True).start()

    @property
    def backlog(self) -> int:
        return len(self._todo)

    def use(self, secret: bytes) -> None:
        with self._changed:
            self.secret = secret
            self._changed.notify_all()

    def add(self, unsigned: list[tuple[int, bytes]]) -> None:
        if unsigned:
            with self._changed:
                self._todo.extend(unsigned)
                self._changed.notify_all()

    def take(self) -> list[tuple[int, bytes]]:
        """The (seq, signature) pairs signed since the last take."""
        with self._changed:
            done, self._done = self._done, []
        return done

    def give_back(self, done: list[tuple[int, bytes]]) -> None:
        """Pairs taken whose saving failed: saved with the next ones."""
        with self._changed:
            self._done[:0] = done

    def sign_now(self, down_to: int) -> None:
        """Sign the oldest entries in this thread until ``down_to`` are left; with 0,
        also wait for those the idle thread holds."""
        while True:
            with self._changed:
                if self.secret is None:
                    return
                if len(self._todo) <= down_to:
                    if down_to == 0:
                        self._changed.wait_for(lambda: self._signing == 0)
                    return
                secret = self.secret
                chunk = [self._todo.popleft() for _ in range(min(64, len(self._todo) - down_to))]
            signed = [(seq, signature_of(message, secret)) for seq, message in chunk]
            with self._changed:
                self._done.extend(signed)

    def _run(self) -> None:
        _lower_priority()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._todo) and self.secret is not None)
                secret = self.secret
                assert secret is not None
                chunk = [self._todo.popleft() for _ in range(min(SIGN_CHUNK, len(self._todo)))]
                self._signing = len(chunk)
            signed = [(seq, signature_of(message, secret)) for seq, message in chunk]
            with self._changed:
                self._done.extend(signed)
                self._signing = 0
                self._changed.notify_all()
                finished = not self._todo
            if finished:
                self._wake()


class Writer:
    """Commits batches of jobs on one connection, and the signatures made behind them."""

    def __init__(self, conn: sqlite3.Connection, synchronous: str = "FULL") -> None:
        self.conn = conn
        self.synchronous = synchronous
        self.doc_ids: dict[str, int] = {}
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
        self.next_seq = int(row[0]) + 1
        # (seq, message) of the entries the last commit stored unsigned
        self.unsigned: list[tuple[int, bytes]] = []

    def left_unsigned(self) -> list[tuple[int, bytes]]:
        """The entries stored unsigned before this process started, oldest first."""
        return self.conn.execute(
            "SELECT seq, message FROM entries WHERE message IS NOT NULL ORDER BY seq"
        ).fetchall()

    def save(self, signed: list[tuple[int, bytes]]) -> bool:
        """Store signatures made since the last commit, in a transaction of their own
        that is not fsynced: one lost is made again from its message at start."""
        conn = self.conn
        try:
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN IMMEDIATE")
            self._save(signed)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            print(f"statebus store: saving signatures failed: {exc}", file=sys.stderr)
            return False
        finally:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return True

    def _save(self, signed: Sequence[tuple[int, bytes]]) -> None:
        # A compacted entry's row is gone, or is the snapshot at its seq (no message).
        self.conn.executemany(
            "UPDATE entries SET signature = ?, message = NULL "
            "WHERE seq = ? AND message IS NOT NULL",
            [(signature, seq) for seq, signature in signed],
        )

    def commit(
        self,
        jobs: list[Job],
        signatures: dict[int, bytes] | str,
        signed: Sequence[tuple[int, bytes]] = (),
    ) -> list[Outcome]:
        """One transaction for the whole batch, with the signatures ``signed`` made
        since the last: every job stored, or every job failed (also when its
        signing failed: ``signatures`` is then why)."""
        self.unsigned = []
        if isinstance(signatures, str):
            return [f"storage failed while committing: {signatures}"] * len(jobs)
        conn, first_seq = self.conn, self.next_seq
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if signed:
                self._save(signed)
            appends: list[Job] = []
            for job in jobs:  # appends in runs, compactions in their place between them
                if job[0] >= 0:
                    outcomes.extend(self._appends(appends))
                    appends = []
                    outcomes.append(self._snapshot(job, signatures))
                else:
                    appends.append(job)
            outcomes.extend(self._appends(appends))
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.next_seq = first_seq
            self.doc_ids.clear()  # ids made in the failed transaction are gone
            self.unsigned = []
            why = f"storage failed while committing: {exc}"
            return [why] * len(jobs)
        return outcomes

    def _doc_id(self, key: str) -> int:
        doc_id = self.doc_ids.get(key)
        if doc_id is None:
            row = self.conn.execute("SELECT id FROM docs WHERE key = ?", (key,)).fetchone()
            if row is None:
                cursor = self.conn.execute(
                    "INSERT INTO docs(key, head, present, log_entries, log_bytes) "
                    "VALUES (?, 0, 0, 0, 0)",
                    (key,),
                )
                doc_id = int(cursor.lastrowid or 0)
            else:
                doc_id = int(row[0])
            if len(self.doc_ids) > 100_000:
                self.doc_ids.clear()
            self.doc_ids[key] = doc_id
        return doc_id

    def _appends(self, jobs: list[Job]) -> list[Outcome]:
        """The appends of a run of jobs, in two statements (executemany)."""
        rows: list[tuple[int, int, str, bytes, bytes, int, bytes | None, bytes | None]] = []
        placed: list[tuple[int, int, int, bytes, Row]] = []  # (job, seq, doc, signature, row)
        for index, (_upto, job_rows) in enumerate(jobs):
            for row in job_rows:
                seq, doc_id = self.next_seq, self._doc_id(row[0])
                self.next_seq += 1
                signature, message = row[2], None
                if not signature:  # this node's: stored with its message, signed behind
                    message = row[8]
                    assert message is not None  # sign() refused the batch otherwise
                    signature = UNSIGNED + seq.to_bytes(8, "big")
                    self.unsigned.append((seq, message))
                rows.append(
                    (seq, doc_id, row[1], signature, row[3], int(row[4]), row[7] or None, message)
                )
                placed.append((index, seq, doc_id, signature if message is None else b"", row))
        outcomes: list[list[tuple[int, bytes]]] = [[] for _ in jobs]
        if not rows:
            return list(outcomes)
        conn = self.conn
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO entries"
            "(seq, doc, author, signature, body, snapshot, grant_, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        inserted: set[int] | None = None  # None: every row went in (no replays)
        if conn.total_changes - before != len(rows):
            found = conn.execute(
                "SELECT seq FROM entries WHERE seq BETWEEN ? AND ?", (rows[0][0], rows[-1][0])
            )
            inserted = {found_row[0] for found_row in found}
        # doc id -> [head, present, entries, bytes, sealed]
        docs: dict[int, list[int]] = {}
        for index, seq, doc_id, signature, row in placed:
            if inserted is not None and seq not in inserted:
                outcomes[index].append((0, signature))  # a replay: stored already
                continue
            outcomes[index].append((seq, signature))
            exists, sealed, size = int(row[5]), int(row[6]), len(row[3])
            totals = docs.get(doc_id)
            if totals is None:
                docs[doc_id] = [seq, exists, 1, size, sealed]
            else:
                totals[0], totals[1] = seq, exists
                totals[2] += 1
                totals[3] += size
                totals[4] |= sealed
        conn.executemany(
            "UPDATE docs SET head = ?, present = ?, log_entries = log_entries + ?, "
            "log_bytes = log_bytes + ?, sealed = MAX(sealed, ?) WHERE id = ?",
            [
                (head, present, count, size, sealed, doc_id)
                for doc_id, (head, present, count, size, sealed) in docs.items()
            ],
        )
        return list(outcomes)

    def _snapshot(self, job: Job, signatures: dict[int, bytes]) -> Outcome:
        upto, (row,) = job
        signature = row[2] or signatures[id(row)]
        doc_id = self._doc_id(row[0])
        conn = self.conn
        conn.execute("DELETE FROM entries WHERE doc = ? AND seq <= ?", (doc_id, upto))
        conn.execute(
            "INSERT INTO entries(seq, doc, author, signature, body, snapshot) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            (upto, doc_id, row[1], signature, row[3]),
        )
        conn.execute(
            "UPDATE docs SET (log_entries, log_bytes) = "
            "(SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM entries WHERE doc = ?) "
            "WHERE id = ?",
            (doc_id, doc_id),
        )
        return [(upto, signature)]


def receive(source: BinaryIO) -> Any:
    """The next message, or None at the end of the input."""
    header = source.read(FRAME.size)
    if len(header) != FRAME.size:
        return None
    (size,) = FRAME.unpack(header)
    body = source.read(size)
    if len(body) != size:
        return None
    return pickle.loads(body)


def send(sink: BinaryIO, message: object) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sink.write(FRAME.pack(len(body)) + body)
    sink.flush()


FLUSH = ("flush",)  # on the committing thread's queue: the idle signer is through


def main() -> int:
    # Its life ends with its input, not with a signal to the node's process group
    # (Ctrl-C, a service manager's SIGTERM): the node, still closing, may yet send
    # the batches it holds, and a snapshot at close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    config = receive(source)
    if config is None:
        return 0
    try:
        synchronous = config["synchronous"]
        writer = Writer(open_database(Path(config["path"]), synchronous), synchronous)
        left = writer.left_unsigned()
    except sqlite3.Error as exc:
        send(sink, ("failed", f"opening {config['path']}: {exc}"))
        return 1
    send(sink, ("ready", writer.next_seq))
    work: queue.Queue[Any] = queue.Queue(2)

    def wake() -> None:
        with contextlib.suppress(queue.Full):
            work.put_nowait(FLUSH)

    signer = Signer(wake)
    signer.add(left)
    threading.Thread(target=read_ahead, args=(source, work, signer), daemon=True).start()
    while (item := work.get()) is not None:
        signed = signer.take()
        if item[0] == "batch":  # with its snapshots' signatures
            outcomes = writer.commit(item[1], item[2], signed)
            send(sink, outcomes)
            if outcomes and isinstance(outcomes[0], str):
                signer.give_back(signed)
                continue
            signer.add(writer.unsigned)
            if signer.backlog > BACKLOG:
                signer.sign_now(BACKLOG // 2)
        else:  # FLUSH: save what the idle thread signed; ("hurry", token): sign all first
            if item[0] == "hurry":
                signer.sign_now(0)
                signed += signer.take()
            if signed and not writer.save(signed):
                signer.give_back(signed)
                signed = []
        if signed:
            send(sink, ("signed", signed))
        if item[0] == "hurry":
            send(sink, ("hurried", item[1]))
    signer.sign_now(0)  # the node closed: leave nothing for the next start to sign
    if signed := signer.take():
        writer.save(signed)
    writer.conn.close()
    return 0


def read_ahead(source: BinaryIO, work: queue.Queue[Any], signer: Signer) -> None:
    """Read the parent's messages and sign each batch's snapshots while the one before
    it commits. A None on the queue is the end of the input."""
    secret: bytes | None = None
    try:
        while (message := receive(source)) is not None:
            if message[0] == "key":
                secret = message[1]
                signer.use(secret)
            elif message[0] == "batch":
                try:
                    work.put(("batch", message[1], sign(message[1], secret)))
                except ValueError as exc:
                    work.put(("batch", message[1], str(exc)))
            elif message[0] == "hurry":
                work.put(message)
    finally:
        work.put(None)


if __name__ == "__main__":
    sys.exit(main())
