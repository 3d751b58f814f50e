"""Live documents: the bounded cache of pycrdt Docs the bus writes into.

A key's Doc is loaded from its log on first use (once, however many requests
ask at the same moment) and evicted when idle or when the cache is over its
bound, but never while one of its writes is still on its way to disk: a Doc
reloaded from the store must hold everything the old one acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from ..sealing import DocumentKeys
from ..store import DocLog, Entry, Store
from ..values import DocValue
from ._complete import complete
from ._history import apply_all
from ._sealed import Opened


class LiveDoc:
    """One key's Doc in memory, with what the bus needs to know about it."""

    __slots__ = (
        "captured",
        "doc",
        "drained",
        "head",
        "key",
        "sealed",
        "snapshot_bytes",
        "tail_bytes",
        "tail_entries",
        "unconfirmed",
        "unsettled",
        "used",
        "view",
    )

    def __init__(self, key: str, doc: Doc[Any], head: int, log: DocLog) -> None:
        self.key = key
        self.doc = doc
        self.view = DocValue(doc)
        self.head = head  # seq of the newest committed entry
        self.snapshot_bytes = 0  # the log's first entry, when it is a snapshot
        self.tail_entries = 0  # the entries after it
        self.tail_bytes = 0
        self.measure(log)
        # Entries applied here and not yet committed (or failed), oldest first.
        self.unsettled: dict[Entry, None] = {}
        # A write applied here whose caller left, and whose outcome is not known yet
        # (it may fail): the Doc's state is then not a safe snapshot of its log.
        self.unconfirmed = False
        # Done once no write applied here is on its way to disk, for a Doc dropped from
        # the cache meanwhile (DocCache.drop): the key's next load waits for it.
        self.drained: asyncio.Future[None] | None = None
        self.sealed: DocumentKeys | None = None  # a document encrypted to some friends
        self.used = time.monotonic()
        self.captured: list[bytes] = []
        doc.observe(self._capture)

    def measure(self, log: DocLog) -> None:
        """Take the log's shape: what compaction would squash."""
        entries = log.entries
        first_is_snapshot = bool(entries) and entries[0].snapshot
        self.snapshot_bytes = len(entries[0].update) if first_is_snapshot else 0
        tail = entries[1:] if first_is_snapshot else entries
        self.tail_entries = len(tail)
        self.tail_bytes = sum(len(entry.update) for entry in tail)

    @property
    def pending(self) -> int:
        """Writes applied here, not yet durable: while any is, the Doc stays cached."""
        return len(self.unsettled)

    def applying(self, entry: Entry) -> None:
        """Note an entry just applied to the Doc, on its way to the store (and counted
        in the log's tail already, so that compaction can be planned at the write)."""
        self.unsettled[entry] = None
        self.tail_entries += 1
        self.tail_bytes += len(entry.update)

    def settled(self, entry: Entry) -> bool:
        """Forget an entry that committed or failed; whether every entry applied
        before it had settled already (so the Doc held no other unsettled change
        when it was applied)."""
        if entry not in self.unsettled:
            return False
        oldest = next(iter(self.unsettled)) is entry
        del self.unsettled[entry]
        if not self.unsettled and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        return oldest

    def wants_compaction(self, min_entries: int) -> bool:
        """Compaction pays for itself when the tail is long and no longer small next to
        the snapshot it would be folded into (so a big document is not re-encoded for
        every few small writes), and in any case before the tail is four times as
        long, or for a snapshot over 512 KiB one entry per 256 of its bytes (so a cold
        open stays close to applying the snapshot alone).

        So re-encoding the snapshot costs a write at most about 256 bytes, or four
        times its own size, however long the document's history: a map whose fields
        one client keeps rewriting grows by a tombstone each write (Yjs merges them
        only along one field)."""
        if self.sealed is not None:
            return False  # a snapshot of a sealed document would have to be sealed too
        if self.tail_entries <= min_entries:
            return False
        longest = max(4 * min_entries, self.snapshot_bytes // 256)
        return 4 * self.tail_bytes >= self.snapshot_bytes or self.tail_entries > longest

    def _capture(self, event: TransactionEvent) -> None:
        self.captured.append(event.update)

    @property
    def exists(self) -> bool:
        return self.head > 0 and not self.view.deleted and self.readable

    @property
    def readable(self) -> bool:
        """False for a sealed document whose keys were sealed to other nodes only."""
        return self.sealed is None or bool(self.sealed.keys)

    def take_update(self) -> bytes | None:
        """The update the last transaction produced, if it changed anything."""
        captured, self.captured = self.captured, []
        if not captured:
            return None
        return captured[0] if len(captured) == 1 else merge_updates(*captured)


class DocCache:
    """Owned by the bus: at most ``max_docs`` Docs, idle ones evicted first."""

    def __init__(
        self,
        store: Store,
        *,
        max_docs: int,
        idle_seconds: float,
        unordered: Callable[[str], bool] = lambda key: False,
        opener: Callable[[str, list[Entry]], Opened] | None = None,
    ) -> None:
        self._store = store
        self._opener = opener  # turns a sealed log into the updates this node can read
        self._unordered = unordered  # keys whose log may be out of causal order
        self._max_docs = max_docs
        self._idle_seconds = idle_seconds
        self._docs: OrderedDict[str, LiveDoc] = OrderedDict()
        self._loading: dict[str, asyncio.Future[LiveDoc]] = {}
        # Per key, the Docs dropped while writes applied to them were still on their
        # way to disk, until those settle (LiveDoc.drained).
        self._draining: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def live(self) -> list[LiveDoc]:
        """Every Doc held now."""
        return list(self._docs.values())

    def peek(self, key: str) -> LiveDoc | None:
        return self._docs.get(key)

    async def get(self, key: str) -> LiveDoc:
        live = self._docs.get(key)
        if live is not None:
            self._docs.move_to_end(key)
            live.used = time.monotonic()
            return live
        if self.draining(key):
            await self._drain(key)
            return await self.get(key)  # another caller may have loaded it meanwhile
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[LiveDoc] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            live = await self._load(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters re-raise it themselves
            raise
        finally:
            del self._loading[key]
        future.set_result(live)
        self._docs[key] = live
        self._shrink()
        return live

    async def _load(self, key: str) -> LiveDoc:
        log = await self._store.load(key)
        opened = (
            self._opener(key, log.entries)
            if self._opener is not None
            else Opened(updates=[entry.update for entry in log.entries])
        )
        updates = opened.updates
        doc: Doc[Any] = Doc()
        # In one transaction, on the loop: pycrdt holds the GIL while it applies, so a
        # worker thread would only add a second pass (squash, then apply the result).
        apply_all(doc, updates)
        if len(updates) > 1 and (self._unordered(key) or opened.sealed is not None):
            doc = await complete(doc, updates, key)
        live = LiveDoc(key, doc, log.head, log)
        live.sealed = opened.sealed
        return live

    def drop(self, key: str) -> None:
        """Forget a Doc whose state may be ahead of the store (a failed commit).

        Writes applied to it after the one that failed may still commit: until they
        settle, the key is not loaded again (a Doc loaded before their commit would
        miss them, and its next snapshot would take them out of the log)."""
        live = self._docs.pop(key, None)
        if live is None or not live.pending:
            return
        drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        live.drained = drained
        waiting = self._draining.setdefault(key, [])
        waiting.append(drained)

        def forget(_: asyncio.Future[None]) -> None:
            waiting.remove(drained)
            if not waiting and self._draining.get(key) is waiting:
                del self._draining[key]

        drained.add_done_callback(forget)

    def draining(self, key: str) -> bool:
        """Whether writes of a dropped Doc of this key are still on their way to disk."""
        return any(not drained.done() for drained in self._draining.get(key, ()))

    async def _drain(self, key: str) -> None:
        while waiting := [d for d in self._draining.get(key, ()) if not d.done()]:
            await asyncio.shield(waiting[0])  # one caller leaving cancels only its wait

    def replace(self, live: LiveDoc) -> None:
        """Put a Doc the bus rebuilt from the key's log in place of the cached one."""
        self._docs[live.key] = live
        self._docs.move_to_end(live.key)
        self._shrink()

    def _shrink(self) -> None:
        if len(self._docs) <= self._max_docs:
            return
        for key in list(self._docs):
            if len(self._docs) <= self._max_docs:
                break
            if self._docs[key].pending == 0:
                del self._docs[key]

    def evict_idle(self) -> int:
        """Drop Docs unused for ``idle_seconds``; return how many went."""
        cutoff = time.monotonic() - self._idle_seconds
        idle = [k for k, live in self._docs.items() if live.used < cutoff and live.pending == 0]
        for key in idle:
            del self._docs[key]
        return len(idle)
