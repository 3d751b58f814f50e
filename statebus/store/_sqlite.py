"""The embedded store: SQLite in WAL mode, one writer process, group commit.

Every append waits for the fsync of the transaction that holds it; appends that
arrive while a commit is in flight are batched into the next one, so a busy
node pays one fsync per batch, not per request. The write connection lives in
a helper process (``_writer.py``), which also signs the entries the node
authors, behind their commit: it needs no GIL of ours, so a commit never waits
for the event loop, and the loop only hands it a pickled batch and reads back
the outcome, then the signatures. Reads
use their own connections in worker threads (WAL readers never block the
writer), so no SQLite call ever runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..errors import StoreError
from . import Abandoned, CommitListener, DocLog, Entry, KeyInfo, Store, StoreStats
from ._writer import FRAME, SIGNATURE_SIZE

log = logging.getLogger(__name__)

WRITER = Path(__file__).with_name("_writer.py")
MAX_BATCH = 1024
IN_FLIGHT = 2  # batches handed to the writer process and not answered yet
# While a batch commits, the next goes out as soon as this many jobs wait (a commit's
# fsync is then shared by enough writes), not only once the loop has taken in a
# whole burst of requests.
SEND_AT = 16
# Entries to sign taken in before there is a key to sign them with, at the most (with
# one, the writer process keeps its backlog near _writer.BACKLOG).
UNSIGNED_WITHOUT_KEY = 1024


def _signature(stored: bytes) -> bytes:
    """An entry's signature as read from its row: b"" while it is still to be made."""
    return stored if len(stored) == SIGNATURE_SIZE else b""


def _tell(listener: CommitListener | None, entries: list[Entry]) -> None:
    """Hand entries to a listener (if any, and any entries); its failure is logged."""
    if entries and listener is not None:
        try:
            listener(entries)
        except Exception:
            log.exception("a listener of committed entries failed")


def folder_bounds(folder: str) -> tuple[str, str]:
    """The key range [low, high) that holds every key under ``folder``."""
    return folder, folder[:-1] + chr(ord("/") + 1)


class _Job:
    __slots__ = ("abandoned", "entries", "error", "future", "messages", "stored", "upto")

    def __init__(
        self,
        entries: Sequence[Entry],
        future: asyncio.Future[list[Entry]],
        upto: int = -1,
        messages: Mapping[Entry, bytes] | None = None,
        abandoned: Abandoned | None = None,
    ) -> None:
        self.entries = entries
        self.messages = messages  # what to sign, for entries not signed yet
        self.future = future
        self.upto = upto  # >= 0: a compaction up to this seq
        self.abandoned = abandoned  # told the outcome if the caller stopped waiting
        self.stored: list[Entry] = []
        self.error: StoreError | None = None

    def rows(self) -> tuple[int, list[tuple[Any, ...]]]:
        """The job as the writer process takes it (``_writer.Job``)."""
        messages = self.messages or {}
        return self.upto, [
            (
                e.key,
                e.author,
                e.signature,
                e.update,
                e.snapshot,
                e.exists,
                e.sealed,
                e.grant,
                None if e.signature else messages.get(e),
            )
            for e in self.entries
        ]


class SQLiteStore(Store):
    """Owns the database file, its writer process and its reader connections."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 10_000,
        synchronous: str = "FULL",
    ):
        self._path = path
        self._secret: bytes | None = None  # see use_signer
        self._synchronous = synchronous
        self._jobs: list[_Job] = []  # waiting for the next batch
        self._wake = asyncio.Event()
        self._listener: CommitListener | None = None
        self._signed_listener: CommitListener | None = None
        # Committed entries this node authors whose signature is still being made, by seq
        # (as many as the writer process's backlog, BACKLOG or so).
        self._unsigned: dict[int, Entry] = {}
        self._hurried: dict[int, asyncio.Future[None]] = {}  # see signed()
        # Jobs submitted and not finished, bounded; submitters past the bound wait
        # in _room (a counter: asyncio.Semaphore costs a write more on the loop).
        self._max_pending = max_pending
        self._outstanding = 0
        self._room: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._child: asyncio.subprocess.Process | None = None
        self._sending: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()  # one per writer process, reading it
        # Batches sent to the writer process, not answered yet, each with that process.
        self._in_flight: deque[tuple[asyncio.subprocess.Process, list[_Job]]] = deque()
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._commits = 0
        self._entries = 0
        self._state = "new"

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"SQLiteStore cannot open when {self._state}")
        self._state = "opening"
        self._loop = asyncio.get_running_loop()
        try:
            self._start(await self._spawn())
        except BaseException:
            self._state = "closed"
            raise
        self._sending = self._loop.create_task(self._send_batches(), name="statebus-store-send")
        self._state = "open"

    async def close(self) -> None:
        if self._state != "open":
            return
        self._state = "closed"
        self._wake.set()
        # What was submitted is committed first.
        if self._sending is not None:
            await asyncio.shield(self._sending)
        await self._stop_child()  # it signs what is left before it exits
        await asyncio.shield(asyncio.gather(*self._pumps))
        with self._readers_lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start the writer process; it opens the database (and brings its schema up
        to date) before it answers."""
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(WRITER),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise StoreError(f"cannot start the store's writer process: {exc}") from exc
        self._send(child, {"path": str(self._path), "synchronous": self._synchronous})
        if self._secret is not None:
            self._send(child, ("key", self._secret))
        answer = await self._receive(child)
        if not (isinstance(answer, tuple) and answer[0] == "ready"):
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            why = answer[1] if isinstance(answer, tuple) else "it exited"
            raise StoreError(f"storage failed while opening {self._path}: {why}")
        return child

    def _start(self, child: asyncio.subprocess.Process) -> None:
        """Make ``child`` the writer process, and read everything it says from now on."""
        assert self._loop is not None
        self._child = child
        pump = self._loop.create_task(self._pump(child), name="statebus-store-outcomes")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()  # the end of its input: it exits
        try:
            await asyncio.wait_for(child.wait(), timeout=30)
        except TimeoutError:
            log.error("the store's writer process did not exit; killing it")
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()

    @staticmethod
    def _send(child: asyncio.subprocess.Process, message: object) -> None:
        """Write a message to the writer process. If it is gone, nothing is sent and
        nothing raised: its outcome never comes, so _pump fails the batch
        (uvloop raises RuntimeError on a closed pipe, asyncio only logs)."""
        assert child.stdin is not None
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with contextlib.suppress(RuntimeError, ConnectionError):
            child.stdin.write(FRAME.pack(len(body)) + body)

    @staticmethod
    async def _receive(child: asyncio.subprocess.Process) -> Any:
        """The next message of the writer process, or None if it stopped."""
        assert child.stdin is not None and child.stdout is not None
        try:
            await child.stdin.drain()
            (size,) = FRAME.unpack(await child.stdout.readexactly(FRAME.size))
            return pickle.loads(await child.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

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
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreError(f"storage failed while {action}: {exc}") from exc

        return await anyio.to_thread.run_sync(run)

    # -- writes ------------------------------------------------------------

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id while one runs (diagnostics, and tests that kill it)."""
        child = self._child
        return child.pid if child is not None and child.returncode is None else None

    @property
    def stats(self) -> StoreStats:
        return StoreStats(self._commits, self._entries)

    def use_signer(self, secret_key: bytes) -> None:
        self._secret = secret_key
        if self._child is not None:
            self._send(self._child, ("key", secret_key))

    def listen(self, listener: CommitListener) -> None:
        self._listener = listener

    def listen_signed(self, listener: CommitListener) -> None:
        self._signed_listener = listener

    async def signed(self) -> None:
        child = self._child
        if self._state != "open" or self._loop is None or child is None:
            return
        token = id(object())
        done = self._hurried[token] = self._loop.create_future()
        self._send(child, ("hurry", token))
        try:
            await done
        finally:
            self._hurried.pop(token, None)

    async def append(
        self,
        entries: Sequence[Entry],
        *,
        messages: Mapping[Entry, bytes] | None = None,
        abandoned: Abandoned | None = None,
    ) -> list[Entry]:
        if not entries:
            return []
        if messages and self._secret is None and len(self._unsigned) >= UNSIGNED_WITHOUT_KEY:
            raise StoreError(
                f"storage refused the write: {len(self._unsigned)} entries wait for a key "
                "to sign them with (use_signer)"
            )
        return await self._submit(entries, -1, messages, abandoned)

    async def compact(self, snapshot: Entry, upto: int, *, message: bytes | None = None) -> None:
        await self._submit([snapshot], upto, None if message is None else {snapshot: message})

    async def _submit(
        self,
        entries: Sequence[Entry],
        upto: int,
        messages: Mapping[Entry, bytes] | None = None,
        abandoned: Abandoned | None = None,
    ) -> list[Entry]:
        if self._state != "open" or self._loop is None:
            raise StoreError(f"the store is {self._state}")
        while self._outstanding >= self._max_pending:
            room: asyncio.Future[None] = self._loop.create_future()
            self._room.append(room)
            try:
                await room
            except asyncio.CancelledError:
                if abandoned is not None:  # never submitted: nothing of it is stored
                    abandoned(entries, StoreError("the write was not stored: its caller left"))
                raise
        self._outstanding += 1
        future: asyncio.Future[list[Entry]] = self._loop.create_future()
        self._jobs.append(_Job(entries, future, upto, messages, abandoned))
        if not self._send_now():
            self._wake.set()
        # A cancelled caller cancels only its wait: the job is committed anyway, and
        # _finish tells its outcome to ``abandoned`` instead of the cancelled future.
        return await future

    def _send_now(self) -> bool:
        """Send what waits at once when the writer process is idle, or has a free slot
        and SEND_AT jobs wait; False to leave it to the sending task.

        That task runs only after every request task that was ready with it, so a
        burst of requests went out as one batch once all of it was taken in: the
        writer idled while the loop worked, and the other way round. Sent from
        here, the writer commits the start of a burst while the loop takes in the
        rest (50 concurrent writers, in-process: 12k to 17-20k writes/s)."""
        child = self._child
        if len(self._in_flight) >= IN_FLIGHT or child is None or child.stdin is None:
            return False
        if self._in_flight and len(self._jobs) < SEND_AT:
            return False
        if child.stdin.transport.get_write_buffer_size():
            return False  # the pipe is full: the task waits for it to drain
        self._hand_over(child)
        return True

    def _take(self) -> list[_Job]:
        jobs = self._jobs[:MAX_BATCH]
        del self._jobs[:MAX_BATCH]
        return jobs

    def _hand_over(self, child: asyncio.subprocess.Process) -> None:
        """Send the next batch of what waits; in flight in the order written to the pipe."""
        jobs = self._take()
        self._send(child, ("batch", [job.rows() for job in jobs]))
        self._in_flight.append((child, jobs))

    async def _send_batches(self) -> None:
        """Hand the writer process every job that waits, as one batch, while fewer than
        IN_FLIGHT batches wait for their outcome: it commits one while the loop gathers
        and sends the next, and what arrives meanwhile makes the next batch. When the
        writer process stopped, start another (also for the signatures still to come)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._child is None and self._unsigned and self._state == "open":
                await self._restart()
            while self._jobs and len(self._in_flight) < IN_FLIGHT:
                if self._child is None and not await self._restart():
                    continue
                child = self._child
                assert child is not None
                self._hand_over(child)
                assert child.stdin is not None
                with contextlib.suppress(ConnectionError):  # gone: _pump says so
                    await child.stdin.drain()
            if self._state == "closed" and not self._jobs and not self._in_flight:
                return

    async def _restart(self) -> bool:
        """Start a writer process in place of the one that stopped; False (and what
        waits failed) if it cannot start. The new one signs, at once, what the old one
        left unsigned; the entries it does not find so (their row compacted away, or
        signed and saved by the old one just before it stopped) are settled here."""
        lost = list(self._unsigned)
        try:
            self._start(await self._spawn())
        except StoreError as exc:
            self._fail(self._take(), exc)
            return False
        if lost and self._state == "open":
            await self.signed()
            await self._settle_lost([seq for seq in lost if seq in self._unsigned])
        return True

    async def _settle_lost(self, seqs: list[int]) -> None:
        def run(conn: sqlite3.Connection) -> dict[int, bytes]:
            marks = ",".join("?" * len(seqs))
            rows = conn.execute(
                f"SELECT seq, signature FROM entries WHERE snapshot = 0 AND seq IN ({marks})",
                seqs,
            )
            return {seq: _signature(signature) for seq, signature in rows}

        found: dict[int, bytes] = await self._read("reading signatures", run) if seqs else {}
        self._take_signatures([(seq, found.get(seq, b"")) for seq in seqs])

    async def _pump(self, child: asyncio.subprocess.Process) -> None:
        """Take everything a writer process says: each batch's outcome, in the order
        sent; the signatures it made behind them; the answers to signed()."""
        while (message := await self._receive(child)) is not None:
            if isinstance(message, list):
                sent_to, jobs = self._in_flight.popleft()
                assert sent_to is child
                self._settle(jobs, message)
                self._finish(jobs)
                self._wake.set()  # room for another batch
            elif message[0] == "signed":
                self._take_signatures(message[1])
            elif message[0] == "hurried" and message[1] in self._hurried:
                self._hurried[message[1]].set_result(None)
        await self._lost(child)

    def _take_signatures(self, pairs: list[tuple[int, bytes]]) -> None:
        """Set the signatures just made (b"": the entry is gone) and tell the listener
        of signed entries about those this process was waiting for."""
        signed = []
        for seq, signature in pairs:
            entry = self._unsigned.pop(seq, None)
            if entry is not None and signature:
                entry.signature = signature
                signed.append(entry)
        _tell(self._signed_listener, signed)

    async def _lost(self, child: asyncio.subprocess.Process) -> None:
        """A writer process stopped: fail what it held, before anything is handed to the
        next one (whose pump takes outcomes from the same queue); the next batch, or
        the signatures still to come, start that one."""
        if self._child is child:
            self._child = None
        error = StoreError(
            "storage failed while committing: the store's writer process stopped; "
            "these writes may or may not be on disk"
        )
        failed = False  # whether it held writes
        while self._in_flight and self._in_flight[0][0] is child:
            self._fail(self._in_flight.popleft()[1], error)
            failed = True
        for done in self._hurried.values():
            if not done.done():
                done.set_result(None)  # its answer never comes: the next one signs them
        try:  # its output ended: it is exiting (a kill now could reap it under the
            # loop's child watcher, which then warns of an unknown child)
            await asyncio.wait_for(child.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
        if failed or self._state == "open":
            log.error("%s (exit %s)", error.detail, child.returncode)
        self._wake.set()

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        error = exc if isinstance(exc, StoreError) else StoreError(f"storage failed: {exc}")
        for job in jobs:
            job.stored = []
            job.error = error
        self._finish(jobs)

    def _settle(self, jobs: list[_Job], outcomes: list[Any]) -> None:
        failed = False
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, str):
                job.error, failed = StoreError(outcome), True
                continue
            for entry, (seq, signature) in zip(job.entries, outcome, strict=True):
                entry.signature = signature
                if seq:  # 0: a replay, stored already
                    entry.seq = seq
                    if job.upto < 0:  # appends are published; a compaction is not
                        job.stored.append(entry)
                        if not signature:  # signed behind the commit: see _take_signatures
                            self._unsigned[seq] = entry
        if failed:
            log.error("store commit of %d jobs failed: %s", len(jobs), outcomes[0])
            return
        self._commits += 1
        self._entries += sum(len(job.stored) for job in jobs)

    def _finish(self, jobs: list[_Job]) -> None:
        stored = [entry for job in jobs for entry in job.stored]
        _tell(self._listener, stored)
        # peers' entries come signed; this node's own are told once signed
        _tell(self._signed_listener, [entry for entry in stored if entry.signature])
        self._outstanding -= len(jobs)
        free = self._max_pending - self._outstanding
        while self._room and free > 0:  # each woken submitter checks the bound again
            room = self._room.popleft()
            if not room.done():
                room.set_result(None)
                free -= 1
        for job in jobs:
            if job.future.done():
                if job.abandoned is not None and job.future.cancelled():
                    try:
                        job.abandoned(job.entries, job.error)
                    except Exception:
                        log.exception("the outcome of an abandoned write was not taken")
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
                Entry(key, r[3], r[1], _signature(r[2]), bool(r[4]), True, r[0], grant=r[5] or b"")
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
                Entry(
                    doc, body, by, _signature(sig), bool(snap), bool(present), seq, grant=g or b""
                )
                for seq, doc, by, sig, body, snap, present, g in rows
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
