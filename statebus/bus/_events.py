"""Events and subscribers: what the bus fans out, and the bounded queues it fills.

An :class:`Event` is made once per committed change and shared by every
subscriber; each wire format encodes it once and caches the bytes on it
(:meth:`Event.encoded`), so fan-out costs one append per subscriber.

A :class:`Subscriber` is a bounded deque and a waiter. Publishing never blocks
and never grows memory: when the deque is full the subscriber is marked
``overflowed``, its queue is dropped, and its reader resynchronises from the
log (the store still holds everything it missed).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..store import Entry

log = logging.getLogger(__name__)


class Kind(enum.IntEnum):
    CHANGE = 0  # one committed entry; its id is its seq
    STATE = 1  # a key's whole current state (first event, or a resync); id = the key's head
    LISTED = 2  # one key of a folder's initial listing; no id, the SYNCED that ends it has one
    SYNCED = 3  # the end of a folder's listing or resync; id = the node's head then
    HEARTBEAT = 4


class Event:
    """One thing a subscriber is told, encoded at most once per wire format."""

    __slots__ = ("_encoded", "entry", "key", "kind", "origin", "seq", "update", "value")

    def __init__(
        self,
        kind: Kind,
        key: str,
        seq: int,
        *,
        value: Any = None,
        update: bytes = b"",
        entry: Entry | None = None,
        origin: str | None = None,
    ) -> None:
        self.kind = kind
        self.key = key  # as the subscriber names it: short for the own namespace
        self.seq = seq
        self.value = value
        self.update = update
        self.entry = entry
        self.origin = origin  # the tag the write carried (a Braid ``Peer``), if any
        self._encoded: dict[str, bytes] = {}

    def encoded(self, fmt: str, encode: Callable[[Event], bytes]) -> bytes:
        data = self._encoded.get(fmt)
        if data is None:
            data = self._encoded[fmt] = encode(self)
        return data

    def __repr__(self) -> str:
        return f"Event({self.kind.name}, {self.key!r}, seq={self.seq})"


HEARTBEAT = Event(Kind.HEARTBEAT, "", 0)


class Subscriber:
    """One reader's bounded queue. Owned by the bus registry; read by one stream.

    While its stream is *parked* (waiting, nothing queued) and the stream gave a
    ``direct`` writer, the events of a committed batch are collected (``pending``)
    and written to the client in one write when the batch is published
    (:meth:`Registry.flush`) instead of waking the stream's task: the fan-out's
    largest cost per reader and event. The writer declines (the transport is
    paused, or gone) and the events are queued as usual; ``last`` is the newest
    seq this reader was given either way.
    """

    __slots__ = (
        "closed",
        "direct",
        "key",
        "last",
        "limit",
        "on_close",
        "on_overflow",
        "on_pending",
        "origin",
        "overflowed",
        "parked",
        "pending",
        "queue",
        "visible",
        "waiter",
    )

    def __init__(
        self,
        key: str,
        limit: int,
        on_overflow: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] | None = None,
        visible: Callable[[str], bool] | None = None,
        on_pending: Callable[[Subscriber], None] = lambda sub: None,
    ) -> None:
        self.on_overflow = on_overflow
        self.on_pending = on_pending  # the registry notes who has events to flush
        self.visible = visible  # canonical key -> may this reader see it
        self.on_close = on_close  # lets the bus end a reader stuck writing to a client
        self.key = key  # canonical key or folder
        self.limit = limit
        self.queue: list[Event] = []  # a list: an idle deque holds a 64-slot block
        self.waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closed = False
        self.last = 0  # the newest seq this reader was given
        self.origin: str | None = None  # events written with this origin are not its to see
        self.direct: Callable[[list[Event]], bool] | None = None
        self.parked = False
        self.pending: list[Event] = []

    def push(self, event: Event) -> None:
        if self.closed:
            return
        entry = event.entry
        if self.visible is not None and entry is not None and not self.visible(entry.key):
            return
        if self.parked and self.direct is not None and not self.queue and not self.overflowed:
            seq = event.seq
            if seq and seq <= (self.pending[-1].seq if self.pending else self.last):
                return  # told already (the stream's catch-up went past it)
            if self.origin is not None and event.origin == self.origin:
                return  # this reader wrote it
            if not self.pending:
                self.on_pending(self)
            self.pending.append(event)
            return
        self._enqueue(event)

    def flush(self) -> None:
        """Write what was collected for this reader, or queue it if the writer declines."""
        events, self.pending = self.pending, []
        if not events or self.closed:
            return
        if self.direct is not None and self.direct(events):
            self.last = max(self.last, max(event.seq for event in events))
            return
        for event in events:
            self._enqueue(event)

    def _enqueue(self, event: Event) -> None:
        if len(self.queue) >= self.limit:
            if not self.overflowed:
                log.info("subscriber of %s fell %d events behind: resync", self.key, self.limit)
                self.on_overflow()
            self.overflowed = True
            self.queue.clear()
        self.queue.append(event)
        self._wake()

    def resync(self) -> None:
        """Catch this reader up from its last seq out of the log, as after an overflow
        (its stream sees ``overflowed``), without counting an overflow: for an event
        whose value the bus cannot vouch for."""
        self.overflowed = True
        self.queue.clear()
        self._wake()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        if self.on_close is not None:
            self.on_close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, idle: float | None = None) -> bool:
        """Return once there is something to read, an overflow, or a close: True;
        or False when ``idle`` seconds passed first (a timer handle, not a cancel
        scope: this is the fan-out's hot path)."""
        if self.queue or self.closed or self.overflowed:
            return True
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = None if idle is None else loop.call_later(idle, self._wake)
        try:
            await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self.queue) or self.closed or self.overflowed

    def drain(self) -> list[Event]:
        events, self.queue = self.queue, []
        return events


class Registry:
    """Who listens to what: subscribers by canonical key and by folder."""

    def __init__(self) -> None:
        self.by_key: dict[str, set[Subscriber]] = {}
        self.overflows = 0
        self.dirty: list[Subscriber] = []  # collected events to write at the next flush

    def mark(self, sub: Subscriber) -> None:
        """``sub`` has events collected for the next flush."""
        self.dirty.append(sub)

    def flush(self) -> None:
        """Write every reader's collected events, each in one write (end of a batch)."""
        dirty, self.dirty = self.dirty, []
        for sub in dirty:
            sub.flush()

    def count_overflow(self) -> None:
        self.overflows += 1

    def add(self, sub: Subscriber) -> None:
        self.by_key.setdefault(sub.key, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        subs = self.by_key.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_key[sub.key]

    def targets(self, key: str, folders: Iterable[str]) -> list[Subscriber]:
        found: list[Subscriber] = []
        subs = self.by_key.get(key)
        if subs:
            found.extend(subs)
        for folder in folders:
            subs = self.by_key.get(folder)
            if subs:
                found.extend(subs)
        return found

    def all(self) -> list[Subscriber]:
        return [sub for subs in self.by_key.values() for sub in subs]

    def __len__(self) -> int:
        return sum(len(subs) for subs in self.by_key.values())
