"""The bus: live documents, the one write path, and fan-out to subscribers.

Opened by the server's lifespan after the store (``async with Bus(...)``); it
owns the Doc cache, the subscriber registry and one task group for its
background work (heartbeats, idle eviction, compaction).

A write: :meth:`Bus.apply` runs the change in one pycrdt transaction (no await
inside) and appends the update it produced to the store as one entry, to be
signed by the store's writer process behind its commit; JSON writes to one key
that come in the same turn of the loop share that transaction and entry
(:meth:`Bus._gather`). The store's commit listener (:meth:`Bus._on_commit`, on
the loop, in seq order) then publishes one :class:`Event` to every subscriber of
the key and of its folders. Readers of a stream get batches of events from :meth:`Bus.stream`.

Entries from peers come in through :meth:`Bus.accept`: checked (placement,
signature) and applied as they are, then stored and published by the same
append path as local writes. Listeners (:meth:`Bus.listen`: federation) see
every committed batch, local or foreign, in seq order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup
from pycrdt import Snapshot, get_update, merge_updates

from ..coverage import SEALED_DIGEST
from ..errors import Conflict, Forbidden, InvalidBody, InvalidKey, NotFound, StoreError
from ..grants import Held
from ..identity import Identity, NodeId, entry_message
from ..keys import Key, folders_of, parse_canonical
from ..store import CommitListener, DocLog, Entry, KeyInfo, Store
from ._accept import Accepted, Checked, Intake
from ._changes import Change, Delete, Patch, PutUpdate, PutValue, Together
from ._docs import DocCache, LiveDoc
from ._events import HEARTBEAT, Event, Kind, Registry, Subscriber
from ._history import replay, squash, value_at
from ._sealed import Opened, Sealer

__all__ = [
    "Accepted",
    "Bus",
    "BusStats",
    "Change",
    "Checked",
    "Delete",
    "Event",
    "Kind",
    "Patch",
    "PutUpdate",
    "PutValue",
]

log = logging.getLogger(__name__)
_MISSING: Any = object()
# The value kept for an entry's event was read from a Doc that also held a write whose
# commit failed: the entry's subscribers are resynchronised from the log instead.
_STALE: Any = object()
SNAPSHOTS_AT_CLOSE = 64  # documents folded at once at a clean stop (each holds its state)


@dataclass(slots=True)
class _Turn:
    """The JSON writes to one key gathered in one turn of the loop, and their writers."""

    key: Key
    origin: str | None
    changes: list[PutValue | Patch] = field(default_factory=list)
    waiting: list[asyncio.Future[int]] = field(default_factory=list)
    # The top-level fields written so far; None once a write set the whole value.
    fields: set[str] | None = field(default_factory=set)

    def add(self, change: PutValue | Patch, done: asyncio.Future[int]) -> bool:
        """Take the change, unless it would overwrite a field written in this turn:
        the value each write leaves must reach the key's subscribers (the turn makes
        one event), so such a write starts a turn of its own."""
        names = change.patch.keys() if isinstance(change, Patch) else None
        if self.changes and (
            self.fields is None or names is None or not self.fields.isdisjoint(names)
        ):
            return False
        if names is None:
            self.fields = None
        elif self.fields is not None:
            self.fields.update(names)
        self.changes.append(change)
        self.waiting.append(done)
        return True


def _sealed_away(live: LiveDoc) -> str:
    return "" if live.readable else " this node can read (it is sealed to other nodes)"


@dataclass(frozen=True, slots=True)
class BusStats:
    live_docs: int
    subscribers: int
    largest_backlog: int  # events queued for the slowest subscriber
    overflows: int  # times a subscriber fell a whole queue behind and was resynced
    head: int


class Bus:
    """Keys to Docs, subscribers, fan-out. See the module docstring for the data path."""

    def __init__(
        self,
        store: Store,
        identity: Identity,
        *,
        max_docs: int = 10_000,
        idle_seconds: float = 300.0,
        queue_limit: int = 1024,
        compact_after: int = 512,
        heartbeat_seconds: float = 15.0,
        replay_limit: int = 1000,
        held: Held | None = None,
        may_write: Callable[[NodeId, str], bool] | None = None,
    ) -> None:
        self._store = store
        self._identity = identity
        self._held = held  # grants to write in other nodes' namespaces
        self.own: NodeId = identity.node_id
        self._own_prefix = f"/~{self.own}"
        self._sealer = Sealer(identity)
        self._sealed: set[str] = set()  # keys whose log holds encrypted entries
        self._plain: dict[Entry, bytes] = {}  # a sealed entry's Yjs update, for its event
        self._docs = DocCache(
            store,
            max_docs=max_docs,
            idle_seconds=idle_seconds,
            unordered=self._unordered,
            opener=self._open,
        )
        self._registry = Registry()
        self._queue_limit = queue_limit
        self._compact_after = compact_after
        self._heartbeat_seconds = heartbeat_seconds
        self._replay_limit = replay_limit
        self._values: dict[Entry, Any] = {}
        self._origins: dict[Entry, str] = {}
        self._compacting: set[str] = set()
        # Per key and origin, the JSON writes gathered in this turn of the loop (see
        # _gather), and the tasks that write them.
        self._gathering: dict[tuple[str, str | None], _Turn] = {}
        self._turns: set[asyncio.Task[None]] = set()
        # A write's entry -> the Doc's state right after it: its key's log is compacted
        # to that entry once it commits (taken from the live Doc, not re-read from disk).
        self._snapshots: dict[Entry, bytes] = {}
        # Writes whose callers left before the outcome -> the Doc they were applied to,
        # until the store tells it (_on_abandoned); and outcomes told before the caller
        # (cancelled, but not yet resumed) could say so.
        self._abandoned: dict[Entry, LiveDoc] = {}
        self._told: dict[Entry, StoreError | None] = {}
        self._intake = Intake(
            self._docs,
            store,
            self._sealer,
            self._plain,
            own=self.own,
            may_write=may_write or (lambda writer, key: False),
        )
        self._listeners: list[CommitListener] = []
        self._signed_listeners: list[CommitListener] = []
        self._head = 0
        self._closing = False
        self._tg: TaskGroup | None = None
        self._state = "new"

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"Bus cannot open when {self._state}")
        self._head = await self._store.head()
        self._sealed = set(await self._store.sealed_keys())
        self._store.use_signer(self._identity.signing_secret())
        self._store.listen(self._on_commit)
        self._store.listen_signed(self._on_signed)
        await self._store.signed()  # what a crash left unsigned, before any peer reads it
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._tick)
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self.close_streams()
        if self._turns:  # writes gathered already: written, as their writers expect
            await asyncio.wait(set(self._turns))
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._intake.close()
        if exc_type is None:
            await self._compact_at_close()

    async def _compact_at_close(self) -> None:
        """On a clean stop, fold each cached document's longer tail into a snapshot of
        its Doc (which holds exactly the committed log once nothing is in flight), so
        the next start opens it from the snapshot alone.

        The snapshots go to the store together (``SNAPSHOTS_AT_CLOSE`` at a time), so
        it commits them in a few batches rather than one commit and fsync each."""
        due = [
            live
            for live in self._docs.live()
            if not live.pending
            and live.tail_entries >= max(1, self._compact_after // 4)
            and self._may_snapshot_live(live)
        ]
        limiter = anyio.CapacityLimiter(SNAPSHOTS_AT_CLOSE)
        failed: list[StoreError] = []

        async def fold(live: LiveDoc) -> None:
            async with limiter:
                if failed:
                    return  # the store refused one: it will refuse the rest
                snapshot = live.doc.get_update()
                try:
                    await self._store_snapshot(live.key, snapshot, live.head, live.exists)
                except StoreError as exc:
                    if not failed:
                        log.warning("compaction of %s at close failed: %s", live.key, exc)
                    failed.append(exc)

        async with anyio.create_task_group() as tg:
            for live in due:
                tg.start_soon(fold, live)

    def close_streams(self) -> None:
        """End every stream, and any opened later (at shutdown, before the server
        waits for its connections to finish)."""
        self._closing = True
        for sub in self._registry.all():
            sub.close()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat_seconds)
            for sub in self._registry.all():
                if not sub.queue:
                    sub.push(HEARTBEAT)
            self._registry.flush()
            evicted = self._docs.evict_idle()
            if evicted:
                log.debug("evicted %d idle documents", evicted)

    # -- names -------------------------------------------------------------

    def display(self, canonical: str) -> str:
        """A canonical key as the node's owner writes it (short for the own namespace)."""
        if canonical.startswith(self._own_prefix):
            return canonical[len(self._own_prefix) :]
        return canonical

    @property
    def head(self) -> int:
        """The newest committed seq of the whole node."""
        return self._head

    def stats(self) -> BusStats:
        subs = self._registry.all()
        return BusStats(
            live_docs=len(self._docs),
            subscribers=len(subs),
            largest_backlog=max((len(sub.queue) for sub in subs), default=0),
            overflows=self._registry.overflows,
            head=self._head,
        )

    # -- reads -------------------------------------------------------------

    def is_sealed(self, canonical: str) -> bool:
        """Whether the key is a document encrypted to some friends."""
        return canonical in self._sealed

    def _open(self, canonical: str, entries: list[Entry]) -> Opened:
        if canonical not in self._sealed:
            return Opened(updates=[entry.update for entry in entries])
        return self._sealer.open_log(parse_canonical(canonical), entries)

    async def read(self, key: Key) -> tuple[dict[str, Any], int]:
        """The key's value and version; NotFound when it holds none (or none this node
        can open: a document sealed to others)."""
        live = await self._docs.get(self._document(key))
        if not live.exists:
            raise NotFound(f"{key.display(self.own)} holds no value{_sealed_away(live)}")
        return live.view.read(), live.head

    async def state(self, key: Key, since: bytes | None = None) -> tuple[bytes, int]:
        """The key's Yjs state as one update, or only what state vector ``since`` lacks."""
        live = await self._docs.get(self._document(key))
        if live.head == 0 or not live.readable:
            raise NotFound(f"{key.display(self.own)} was never written{_sealed_away(live)}")
        if since is None:
            return live.doc.get_update(), live.head
        try:
            return live.doc.get_update(since), live.head
        except ValueError:
            raise InvalidBody("'since' is not a Yjs state vector") from None

    async def value_at(self, key: Key, version: int) -> dict[str, Any]:
        """The key's value as of ``version`` (a seq of this node), for three-way PUTs."""
        live = await self._docs.get(self._document(key))
        if version > self._head:
            raise Conflict(f"version {version} is newer than anything this node has")
        if version >= live.head and not live.pending:  # the Doc holds exactly that version
            return live.view.read() if live.exists else {}
        if live.sealed is not None:
            raise Conflict(
                f"{key.display(self.own)} is sealed: a PUT with Parents must name its newest "
                "version; read it again and retry"
            )
        value = await value_at(await self._store.load(live.key), version)
        if value is None:
            raise Conflict(
                f"version {version} of {key.display(self.own)} was compacted away; "
                "read the key again and retry"
            )
        return value

    async def listing(
        self,
        folder: Key,
        *,
        after: str = "",
        limit: int = 1000,
        visible: Callable[[str], bool] | None = None,
    ) -> tuple[list[KeyInfo], str | None]:
        """One page of the keys under a folder that hold a value (display keys,
        sorted), and the cursor of the next page (a path relative to the folder)."""
        start = f"{folder.canonical}{after}" if after else ""
        infos = await self._store.keys(folder.canonical, after=start, limit=limit)
        following = infos[-1].key[len(folder.canonical) :] if len(infos) == limit else None
        shown = [
            KeyInfo(self.display(i.key), i.head, i.exists, i.log_entries, i.log_bytes)
            for i in infos
            if visible is None or visible(i.key)
        ]
        return shown, following

    async def namespaces(self) -> list[NodeId]:
        """Every namespace that holds a value here, own first (one indexed probe each)."""
        found = [self.own]
        after = "/~"  # past the machinery documents (/_acl), which are in no namespace
        while infos := await self._store.keys("/", after=after, limit=1):
            namespace = NodeId(infos[0].key[2:].split("/", 1)[0])
            if namespace != self.own:
                found.append(namespace)
            after = f"/~{namespace}0"  # past every key of this namespace ("0" follows "/")
        return found

    def _document(self, key: Key) -> str:
        if key.is_folder:
            raise InvalidKey("this names a folder; a document key does not end in '/'")
        return key.canonical

    # -- the one write path ------------------------------------------------

    async def apply(
        self,
        key: Key,
        change: Change,
        *,
        origin: str | None = None,
        encrypt_to: frozenset[NodeId] | None = None,
    ) -> int:
        """Run ``change`` on the key, durably; return the key's new version.

        ``origin`` tags the change's event, so that the reader that wrote it
        (``stream(..., origin=...)``) is not sent its own echo. ``encrypt_to``
        seals the document to these friends (and the owner): on its first write
        it is created sealed; later, naming other friends re-keys it.
        """
        canonical = self._document(key)
        grant = b""
        if key.namespace != self.own:
            found = self._held.find(key.namespace, key.path) if self._held else None
            if found is None:
                raise Forbidden(
                    f"{key.namespace[:16]}…'s owner has not granted this node writing {key.path}"
                )
            if encrypt_to is not None:
                raise Forbidden("only a namespace's owner seals its documents")
            grant = found.encode()
        live = await self._docs.get(canonical)
        if live.sealed is not None and key.namespace != self.own:
            raise Forbidden(f"{key.canonical} is sealed by its owner; only the owner writes it")
        if isinstance(change, Delete) and not live.exists:
            raise NotFound(f"{key.display(self.own)} holds no value to delete")
        if (
            isinstance(change, (Patch, PutValue))
            and key.namespace == self.own
            and live.sealed is None
            and encrypt_to is None
            # a PUT sets the whole value, so it is written alone: at once, unless it must
            # follow writes of the same origin gathered before it
            and (isinstance(change, Patch) or (key.canonical, origin) in self._gathering)
        ):
            return await self._gather(key, change, origin)
        payloads = self._rekey(live, key, encrypt_to) if encrypt_to is not None else []
        update, exists = self._transact(live, change)
        return await self._write(live, key, payloads, update, exists, grant, origin)

    async def _gather(self, key: Key, change: PutValue | Patch, origin: str | None) -> int:
        """Run a JSON write of the own namespace together with the others to its key that
        come in the same turn of the loop: one transaction, one entry, one signature
        and one row for them all, committed in the next turn (:meth:`_write_turn`).
        Writes of different origins are kept apart: a reader is not sent its own
        writes back, and must be sent everyone else's. A write of a field another
        write of the turn wrote starts the next turn (:meth:`_Turn.add`), so that
        every value written is in an event.

        Under many writers of one key this takes most of a write's cost off the loop
        and the writer process; a lone write waits one turn of the loop more. Writes
        that were sent before another was acknowledged still come in their order; a
        Yjs update or a DELETE sent meanwhile may come before the gathered writes (no
        order can be seen among writes in flight together)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        turn = self._gathering.get((key.canonical, origin))
        if turn is None or not turn.add(change, done):
            turn = self._gathering[key.canonical, origin] = _Turn(key, origin)
            turn.add(change, done)
            task = loop.create_task(self._write_turn(turn))  # runs behind this turn's writers
            self._turns.add(task)
            task.add_done_callback(self._turns.discard)
        return await done

    async def _write_turn(self, turn: _Turn) -> None:
        """Write the changes gathered for a key in one turn, and tell each writer."""
        key = turn.key
        if self._gathering.get((key.canonical, turn.origin)) is turn:
            del self._gathering[key.canonical, turn.origin]  # later writes start the next
        together = Together(tuple(turn.changes), {})
        try:
            live = await self._docs.get(key.canonical)
            if live.sealed is not None:
                raise Conflict(
                    f"{key.display(self.own)} was sealed while this write waited to be "
                    "applied; it was not: write it again"
                )
            update, exists = self._transact(live, together)
            version = await self._write(live, key, [], update, exists, b"", turn.origin)
        except Exception as exc:
            for done in turn.waiting:
                if not done.done():  # done: its writer left
                    done.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are its writers
            for done in turn.waiting:
                done.cancel()
            raise
        for i, done in enumerate(turn.waiting):
            if done.done():
                continue
            failed = together.failed.get(i)
            if failed is None:
                done.set_result(version)
            else:
                done.set_exception(failed)

    async def _write(
        self,
        live: LiveDoc,
        key: Key,
        payloads: list[bytes],
        update: bytes | None,
        exists: bool,
        grant: bytes,
        origin: str | None,
    ) -> int:
        """Store what a change did to the key's Doc (``update``, after ``payloads``, the
        sealed document's keys if any), durably; return the key's new version."""
        canonical = key.canonical
        if update is not None and live.sealed is not None:
            payloads.append(self._sealer.seal(key, live.sealed, update))
        elif update is not None:
            payloads.append(update)
        if not payloads:
            return live.head
        entries = []
        messages = {}  # signed by the store's writer process, behind the commit
        for payload in payloads:
            entry = Entry(
                canonical,
                payload,
                self.own,
                b"",
                exists=exists,
                sealed=live.sealed is not None,
                grant=grant,
            )
            messages[entry] = entry_message(key.namespace, key.path, payload)
            entries.append(entry)
        if update is not None and live.sealed is not None:
            self._plain[entries[-1]] = update
        for entry in entries:
            self._remember(live, entry, origin)
        for entry in entries:
            live.applying(entry)
        if self._snapshot_due(live):
            # The Doc now holds exactly what the log will hold up to this write's entry
            # (if every write before it commits): compaction needs nothing more.
            self._compacting.add(live.key)
            self._snapshots[entries[-1]] = live.doc.get_update()
        await self._append([(live, entry) for entry in entries], messages)
        return entries[-1].seq or live.head

    def _rekey(self, live: LiveDoc, key: Key, recipients: frozenset[NodeId]) -> list[bytes]:
        """The key payloads that seal the document to ``recipients`` from now on."""
        if live.sealed is None:
            if live.head:
                raise Conflict(
                    f"{key.display(self.own)} was written in the clear, and those entries "
                    "are out; seal a new key instead"
                )
            live.sealed, payload = self._sealer.create(recipients)
            self._sealed.add(live.key)
            return [payload]
        return self._sealer.rekey(live.sealed, recipients)

    def _transact(self, live: LiveDoc, change: Change) -> tuple[bytes | None, bool]:
        """Run the change in one transaction; the update to store (None for no change)
        and whether the key holds a value after it."""
        live.take_update()
        with live.doc.transaction():
            change.run(live.view)
            exists = not live.view.deleted  # read in the open transaction: cheaper
        update = live.take_update()
        if not isinstance(change, PutUpdate):
            return update, exists
        raw = change.update
        if update is None:
            # Nothing integrated: a replay, or parts waiting for missing dependencies.
            missing = get_update(raw, live.doc.get_state())
            return (None if missing[:1] == b"\x00" else raw), exists
        if not exists:
            with live.doc.transaction():
                live.view.undelete()
            undelete = live.take_update()
            return (merge_updates(raw, undelete) if undelete else raw), True
        return raw, exists

    def _snapshot_due(self, live: LiveDoc) -> bool:
        """Whether the write about to go to the store should also be the point its key's
        log is compacted to, from the live Doc (see :meth:`_compact_to`)."""
        return self._may_snapshot_live(live) and live.wants_compaction(self._compact_after)

    def _may_snapshot_live(self, live: LiveDoc) -> bool:
        """Whether this node may replace the key's log with its live Doc's state: its
        own, in the clear, not compacting already, every write it holds trusted and
        no part waiting on missing dependencies."""
        return (
            live.key not in self._compacting
            and not live.unconfirmed
            and live.sealed is None
            and live.key.startswith(self._own_prefix)
            and not self._intake.waits(live.key)
        )

    def _remember(self, live: LiveDoc, entry: Entry, origin: str | None = None) -> None:
        """Keep the value right after this entry for its event (the Doc moves on)."""
        if self._registry.targets(entry.key, folders_of(entry.key)):
            self._values[entry] = live.view.read() if entry.exists else None
        if origin is not None:
            self._origins[entry] = origin

    async def _append(
        self, writes: list[tuple[LiveDoc, Entry]], messages: dict[Entry, bytes] | None = None
    ) -> list[Entry]:
        """Store entries their Docs already hold; return those stored (replays are not).

        The caller noted each write as applying to its Doc when it changed the Doc (so
        the Doc is not evicted before the disk has the entry); it settles at its commit
        (:meth:`_on_commit`), or here when it failed or was a replay, or when the store
        tells the outcome of a write whose caller left (:meth:`_on_abandoned`).
        """
        try:
            stored = await self._store.append(
                [entry for _, entry in writes], messages=messages, abandoned=self._on_abandoned
            )
        except StoreError:
            self._failed(writes)
            raise
        except BaseException:  # the caller left before the outcome; the write may yet fail
            for live, entry in writes:
                live.unconfirmed = True
                self._abandoned[entry] = live
            told = [entry for _, entry in writes if entry in self._told]
            if told:  # the outcome came while this task was being cancelled (one job's)
                errors = [self._told.pop(entry) for entry in told]
                self._on_abandoned(told, errors[0])
            raise
        finally:
            for live, entry in writes:
                if entry not in self._abandoned:
                    live.settled(entry)
                if self._snapshots.pop(entry, None) is not None:
                    self._compacting.discard(live.key)  # not committed: no snapshot there
        if len(stored) < len(writes):
            for _, entry in writes:
                if not entry.seq:
                    self._forget(entry)
        return stored

    def _forget(self, entry: Entry) -> None:
        """Drop what was kept for an entry's event: it failed, or was a replay."""
        self._values.pop(entry, None)
        self._origins.pop(entry, None)
        self._plain.pop(entry, None)

    def _failed(self, writes: list[tuple[LiveDoc, Entry]]) -> None:
        """Writes whose commit failed: their Docs hold what the disk does not."""
        for live, entry in writes:
            self._forget(entry)
            for later in live.unsettled:  # applied on top of it, and may yet commit
                if later is not entry and later in self._values:
                    self._values[later] = _STALE
            self._docs.drop(live.key)

    def _on_abandoned(self, entries: Sequence[Entry], error: StoreError | None) -> None:
        """The outcome of writes whose callers left: handled as those callers would
        have (a failure drops the Doc), then settled on the Doc they were applied to."""
        if entries and entries[0] not in self._abandoned:
            self._told.update(dict.fromkeys(entries, error))  # its caller is not told yet
            return
        writes = [(self._abandoned.pop(entry), entry) for entry in entries]
        if error is not None:
            self._failed(writes)
        for live, entry in writes:
            live.settled(entry)
        if error is None:
            left = set(map(id, self._abandoned.values()))
            for live, entry in writes:
                if not entry.seq:  # a replay: no event will take it
                    self._forget(entry)
                if id(live) not in left:  # every write whose caller left is on disk now
                    live.unconfirmed = False

    # -- entries from peers ------------------------------------------------

    def _unordered(self, key: str) -> bool:
        """Whether a key's log may be out of causal order: another namespace's (relayed by
        peers in the order they came), or one with parts still waiting."""
        return not key.startswith(self._own_prefix) or self._intake.waits(key)

    def check(self, entries: Sequence[Entry]) -> Checked:
        """Start verifying a batch from a peer now (worker threads; no await), for
        :meth:`accept` to take later: a batch waiting behind another is checked meanwhile.
        :meth:`Checked.cancel` drops it."""
        return self._intake.check(entries)

    async def accept(
        self, entries: Sequence[Entry] | Checked, *, staged: Callable[[], None] | None = None
    ) -> Accepted:
        """Store entries from peers verbatim (same author and signature) and publish them.

        Refused, and logged: entries under ``/~X/`` not signed by X, bad
        signatures, malformed updates. An entry that adds nothing to its Doc
        (a replay) changes nothing and is not stored.

        ``staged`` is called once every entry is checked and applied to its Doc,
        just before the batch is handed to the store (in the same step, so a batch
        staged after it is stored after it): a peer's next batch may be verified
        and applied while this one commits.
        """
        checked = entries if isinstance(entries, Checked) else self._intake.check(entries)
        result, writes = await self._intake.stage(checked, self._remember)
        if staged is not None:
            staged()
        if writes:
            result.stored = await self._append(writes)
        await self._intake.settle(writes)
        return result

    def listen(self, listener: CommitListener, *, signed: bool = False) -> Callable[[], None]:
        """Call ``listener`` with every committed batch (on the loop, never awaiting);
        returns the function that stops it. ``signed``: with every committed entry
        once it has its signature instead (what may go to peers; this node's own
        entries are signed a little after their commit, see :meth:`Store.listen_signed`)."""
        listeners = self._signed_listeners if signed else self._listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    async def digest(self, canonical: str) -> bytes | None:
        """The document's Yjs snapshot (delete set and state vector), None if never written;
        for a sealed document the marker that makes catch-up exchange its whole log."""
        live = await self._docs.get(canonical)
        if live.head == 0:
            return None
        if live.sealed is not None:
            return SEALED_DIGEST
        return bytes(Snapshot.from_doc(live.doc).encode())

    async def log(self, canonical: str) -> DocLog:
        """The document's stored log: every signed entry, a snapshot first if compacted."""
        return await self._store.load(canonical)

    async def documents(self, folder: str, *, after: str = "", limit: int = 1000) -> list[str]:
        """Canonical keys of every document under a folder, deleted ones too, sorted."""
        infos = await self._store.keys(folder, after=after, limit=limit, deleted=True)
        return [info.key for info in infos]

    def _on_commit(self, entries: list[Entry]) -> None:
        """Publish committed entries, in seq order, to every subscriber."""
        for entry in entries:
            self._head = max(self._head, entry.seq)
            live = self._docs.peek(entry.key)
            snapshot = self._snapshots.pop(entry, None)
            if live is not None:
                live.head = entry.seq
                alone = live.settled(entry)
                if snapshot is not None:
                    self._compact_to(live, entry, snapshot if alone else None)
                elif live.wants_compaction(self._compact_after):
                    self._schedule_compaction(live)
            elif snapshot is not None:
                self._compacting.discard(entry.key)
            value = self._values.pop(entry, _MISSING)
            origin = self._origins.pop(entry, None)
            update = entry.update
            if entry.sealed:
                self._sealed.add(entry.key)
                plain = self._plain.pop(entry, None)
                if plain is None:
                    continue  # keys, or an update not sealed to this node: nothing shows
                update = plain
            targets = self._registry.targets(entry.key, folders_of(entry.key))
            if not targets:
                continue
            if value is _MISSING and live is None:  # dropped after a failed commit
                value = _STALE
            elif value is _MISSING and live is not None:  # a subscriber came meanwhile
                value = live.view.read() if entry.exists else None
            if value is _STALE:
                for sub in targets:
                    sub.resync()  # from its last seq, out of the log
                continue
            event = Event(
                Kind.CHANGE,
                self.display(entry.key),
                entry.seq,
                value=value,
                update=update,
                entry=entry,
                origin=origin,
            )
            for sub in targets:
                sub.push(event)
        self._registry.flush()  # one write per parked reader for the whole batch
        _tell(self._listeners, entries)

    def _on_signed(self, entries: list[Entry]) -> None:
        _tell(self._signed_listeners, entries)

    # -- compaction --------------------------------------------------------

    def _compact_to(self, live: LiveDoc, entry: Entry, snapshot: bytes | None) -> None:
        """Compact the log up to a just-committed entry with the Doc's state taken right
        after it was applied; None when another write had been applied before it and
        had not committed then (it may yet fail, or come later in the log)."""
        if snapshot is None or self._tg is None:
            self._compacting.discard(live.key)
            if live.wants_compaction(self._compact_after):
                self._schedule_compaction(live)
            return
        work = self._store_snapshot(live.key, snapshot, entry.seq, entry.exists)
        self._tg.start_soon(self._compact, live.key, work)

    def _schedule_compaction(self, live: LiveDoc) -> None:
        if live.key in self._compacting or self._tg is None:
            return
        if not live.key.startswith(self._own_prefix):
            return  # only a namespace's owner can sign the snapshot that replaces its entries
        self._compacting.add(live.key)
        self._tg.start_soon(self._compact, live.key, self.compact(live.key))

    async def _compact(self, key: str, work: Awaitable[Any]) -> None:
        try:
            await work
        except StoreError as exc:
            log.error("compaction of %s failed: %s", key, exc)
        finally:
            self._compacting.discard(key)

    async def compact(self, key: str) -> bool:
        """Squash the key's committed log into one snapshot entry signed by its owner.

        The snapshot is built from the store's entries (not the live Doc, which
        may hold writes still on their way to disk), in a worker thread. The write
        path compacts a busy key without this: see :meth:`_compact_to`.
        """
        if not key.startswith(self._own_prefix) or key in self._sealed:
            return False  # another node's, or sealed: no snapshot this node may write
        log_ = await self._store.load(key)
        if len(log_.entries) < 2:
            return False
        await self._store_snapshot(key, await squash(log_), log_.entries[-1].seq, log_.exists)
        return True

    async def _store_snapshot(self, key: str, snapshot: bytes, upto: int, exists: bool) -> None:
        """Replace the key's log up to seq ``upto`` with ``snapshot``, signed by the owner
        (in the store's writer: hashing a big snapshot is not the loop's work)."""
        path = key[len(self._own_prefix) :]
        entry = Entry(key, snapshot, self.own, b"", snapshot=True, exists=exists)
        await self._store.compact(entry, upto, message=entry_message(self.own, path, snapshot))
        info = await self._store.info(key)
        live = self._docs.peek(key)
        if live is not None and info is not None:  # the log is the snapshot and what came since
            live.snapshot_bytes = len(snapshot)
            live.tail_entries = info.log_entries - 1
            live.tail_bytes = info.log_bytes - len(snapshot)
        log.debug("compacted %s up to seq %d", key, upto)

    # -- streams -----------------------------------------------------------

    async def stream(
        self,
        key: Key,
        *,
        after: int | None = None,
        origin: str | None = None,
        heartbeat: float | None = None,
        on_close: Callable[[], None] | None = None,
        visible: Callable[[str], bool] | None = None,
        direct: Callable[[list[Event]], bool] | None = None,
    ) -> AsyncGenerator[list[Event], None]:
        """Batches of events for a key or folder: first its state, then each change.

        ``after`` resumes from a seq the reader has seen (``Last-Event-ID``):
        only what changed since, nothing twice. Live changes written with this
        ``origin`` are skipped (the reader made them). ``heartbeat`` asks for a
        heartbeat after that many idle seconds, besides the bus's own ticker.
        ``visible`` (canonical key -> bool) filters a folder's keys for a reader
        who may see only some of them; it is asked as events are queued.
        The stream ends when the bus closes it (shutdown), and then ``on_close``
        is called so that a writer blocked on a client that stopped reading can
        be cancelled; the caller must close the generator. ``direct`` (see
        :class:`Subscriber`) writes an event to the reader at once while the
        stream waits; it returns False when it cannot, and the event is queued.
        """
        sub = Subscriber(
            key.canonical,
            self._queue_limit,
            self._registry.count_overflow,
            on_close,
            visible,
            self._registry.mark,
        )
        sub.origin, sub.direct = origin, direct
        if self._closing:
            return
        self._registry.add(sub)
        try:
            sub.last, first = await self._catch_up(key, sub, after)
            if first:
                yield first
            del first  # the whole state: not to be held while the stream idles
            while not sub.closed:
                if sub.overflowed:
                    sub.overflowed = False
                    sub.queue.clear()
                    sub.last, events = await self._catch_up(key, sub, sub.last)
                else:
                    events = []
                    last = sub.last
                    for event in sub.drain():  # once per event and reader
                        seq = event.seq
                        if seq > last:
                            last = seq
                            if origin is None or event.origin != origin:
                                events.append(event)
                        elif seq == 0:  # a heartbeat
                            events.append(event)
                    sub.last = last
                if events:
                    yield events
                    del events
                    continue
                sub.parked = True  # from here on, push may write to the reader directly
                try:
                    woken = await sub.wait(heartbeat)
                finally:
                    sub.parked = False
                if not woken:
                    yield [HEARTBEAT]
        finally:
            self._registry.remove(sub)
            sub.close()

    async def _catch_up(
        self, key: Key, sub: Subscriber, after: int | None
    ) -> tuple[int, list[Event]]:
        """What a (re)joining reader needs first, and the seq it brings it to."""
        if key.is_folder:
            return await self._folder_catch_up(key, after, sub.visible)
        live = await self._docs.get(key.canonical)
        if after is not None and after == live.head:
            return after, []
        if after is not None and after < live.head and key.canonical not in self._sealed:
            log_ = await self._store.load(key.canonical)
            events = await replay(log_, after, key.display(self.own))
            if events is not None and len(events) <= self._replay_limit:
                return max(after, max((e.seq for e in events), default=after)), events
            live = await self._docs.get(key.canonical)
        value = live.view.read() if live.exists else None
        state = Event(
            Kind.STATE, key.display(self.own), live.head, value=value, update=live.doc.get_update()
        )
        return live.head, [state]

    async def _folder_catch_up(
        self, folder: Key, after: int | None, visible: Callable[[str], bool] | None
    ) -> tuple[int, list[Event]]:
        head = self._head
        if after is not None and after <= head:
            entries = await self._store.entries_after(
                folder.canonical, after, folder=True, limit=self._replay_limit + 1
            )
            if len(entries) <= self._replay_limit:
                if visible is not None:
                    entries = [entry for entry in entries if visible(entry.key)]
                return await self._folder_replay(entries, after)
        events = []
        cursor = ""
        while True:
            infos = await self._store.keys(folder.canonical, after=cursor, limit=500)
            for info in infos:
                if visible is not None and not visible(info.key):
                    continue
                value, update = await self._current(info.key)
                events.append(
                    Event(
                        Kind.LISTED, self.display(info.key), info.head, value=value, update=update
                    )
                )
            if len(infos) < 500:
                break
            cursor = infos[-1].key
        events.append(Event(Kind.SYNCED, folder.display(self.own), head))
        return head, events

    async def _folder_replay(self, entries: list[Entry], after: int) -> tuple[int, list[Event]]:
        events: list[Event] = []
        for canonical in dict.fromkeys(entry.key for entry in entries):
            replayed = (
                None  # a sealed log is replayed as its state: its entries are not Yjs
                if canonical in self._sealed
                else await replay(await self._store.load(canonical), after, self.display(canonical))
            )
            if replayed is None:
                value, update = await self._current(canonical)
                live = await self._docs.get(canonical)
                replayed = [
                    Event(
                        Kind.STATE, self.display(canonical), live.head, value=value, update=update
                    )
                ]
            events.extend(replayed)
        events.sort(key=lambda e: e.seq)
        return max([after, *(e.seq for e in entries)]), events

    async def _current(self, canonical: str) -> tuple[dict[str, Any] | None, bytes]:
        live = await self._docs.get(canonical)
        return (live.view.read() if live.exists else None), live.doc.get_update()


def _tell(listeners: list[CommitListener], entries: list[Entry]) -> None:
    for listener in listeners:
        try:
            listener(entries)
        except Exception:
            log.exception("a listener of committed entries failed")
