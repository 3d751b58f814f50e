"""Computed keys (statebus getters): a key whose value is a function of other keys.

An app defines one with a getter, an async function that reads other keys
through a :class:`Reader` and returns the value (a JSON object, or ``None``
for no value)::

    async def total(read: Reader) -> dict[str, Any] | None:
        prices = await read.folder("/prices/")
        return {"total": sum(price["amount"] for price in prices.values())}

    computed.define("/total", total)

Whatever a run reads is what the key depends on, found anew on every run as
statebus getters do; when a commit touches any of it (a local write, or a
peer's entry arriving under ``/~id/``) the getter runs again. Runs never
overlap and a burst of commits costs at most one more run.

The result is written through ``Bus.apply(key, PutValue(...))``: the key is a
materialized view. That makes it a key like any other for free: GET, SSE
(resumable by ``Last-Event-ID`` across restarts, since versions are the log's
seqs), folder listings and folder streams, binary Yjs state; each run stores
only its difference from the last (``PutValue`` diffs, compaction bounds the
log), and a run that changes nothing writes nothing. The price is storage
and that it syncs like an own key, which the privacy of issue 4 governs like
any other. A computed key belongs to its getter: a write by anyone else is
undone by the next run, which it triggers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from .bus import Bus, Delete, PutValue
from .errors import NotFound, StatebusError
from .identity import NodeId
from .keys import Key, parse_key
from .store import Entry
from .values import validate

__all__ = ["Computed", "Getter", "Reader"]

log = logging.getLogger(__name__)

Getter = Callable[["Reader"], Awaitable[dict[str, Any] | None]]
LISTING_PAGE = 1000
MAX_PENDING = 10_000  # commits remembered during one run; past it, simply run again


class Reader:
    """The reads of one getter run, recorded as its dependencies."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.own: NodeId = bus.own
        self.keys: set[str] = set()
        self.folders: set[str] = set()
        self.namespaces_seen: set[str] | None = None  # set once the run asked for them

    def key(self, key: str) -> Key:
        """Parse a key as a user of this node writes it (``/x`` or ``/~id/x``)."""
        return parse_key(key, self.own)

    async def get(self, key: str) -> dict[str, Any] | None:
        """The key's value, or None when it holds none."""
        parsed = self.key(key)
        self.keys.add(parsed.canonical)
        try:
            value, _version = await self._bus.read(parsed)
        except NotFound:
            return None
        return value

    async def folder(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every key under the folder (at any depth) with its value, sorted by key."""
        parsed = self.key(folder if folder.endswith("/") else folder + "/")
        self.folders.add(parsed.canonical)
        found: dict[str, dict[str, Any]] = {}
        after: str | None = ""
        while after is not None:
            infos, after = await self._bus.listing(parsed, after=after, limit=LISTING_PAGE)
            for info in infos:
                try:
                    value, _version = await self._bus.read(self.key(info.key))
                except NotFound:
                    continue  # deleted since the listing
                found[info.key] = value
        return found

    async def namespaces(self) -> list[NodeId]:
        """The namespaces that hold values here, own first; a new one re-runs the getter."""
        found = await self._bus.namespaces()
        self.namespaces_seen = set(found)
        return found

    def depends_on(self, canonical: str) -> bool:
        if canonical in self.keys:
            return True
        if any(canonical.startswith(folder) for folder in self.folders):
            return True
        if self.namespaces_seen is None or not canonical.startswith("/~"):
            return False  # machinery documents (/_acl) are in no namespace
        return canonical[2:].split("/", 1)[0] not in self.namespaces_seen


class _View:
    """One computed key: its getter, what its last run read, and its run state."""

    def __init__(self, key: Key, getter: Getter) -> None:
        self.key = key
        self.getter = getter
        self.deps: Reader | None = None
        self.wake = anyio.Event()
        self.wake.set()  # the first run
        self.running = False
        self.pending: list[str] = []
        self.runs = 0

    def notice(self, keys: list[str]) -> None:
        own = self.key.canonical
        if self.running:
            if len(self.pending) < MAX_PENDING:
                self.pending.extend(key for key in keys if key != own)
            else:
                self.wake.set()
            return
        if any(key == own or self.deps is None or self.deps.depends_on(key) for key in keys):
            self.wake.set()


class Computed:
    """Owned by the server's lifespan, opened after the bus (``async with Computed(bus)``).

    Each defined key runs in a task of this object's task group; closing it
    cancels them. Keys may be defined before or after it opens.
    """

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._views: dict[str, _View] = {}
        self._tg: TaskGroup | None = None
        self._unlisten: Callable[[], None] | None = None
        self._state = "new"

    def define(self, key: str, getter: Getter) -> None:
        """Make ``key`` (of the own namespace) the value of ``getter``, kept up to date."""
        parsed = parse_key(key, self._bus.own)
        if parsed.is_folder or parsed.namespace != self._bus.own:
            raise ValueError(f"a computed key is a document of this node, not {key!r}")
        if parsed.canonical in self._views:
            raise ValueError(f"{key} is already computed")
        view = self._views[parsed.canonical] = _View(parsed, getter)
        if self._tg is not None:
            self._tg.start_soon(self._run, view)

    def runs(self, key: str) -> int:
        """How many runs of the key's getter have finished (for tests and status)."""
        return self._views[parse_key(key, self._bus.own).canonical].runs

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"Computed cannot open when {self._state}")
        self._state = "open"
        self._unlisten = self._bus.listen(self._on_commit)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for view in self._views.values():
            self._tg.start_soon(self._run, view)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        if self._unlisten is not None:
            self._unlisten()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    def _on_commit(self, entries: list[Entry]) -> None:
        keys = list(dict.fromkeys(entry.key for entry in entries))  # a busy key once a batch
        for view in self._views.values():
            view.notice(keys)

    async def _run(self, view: _View) -> None:
        while True:
            await view.wake.wait()
            view.wake = anyio.Event()
            view.running = True
            view.pending = []
            try:
                await self._compute(view)
            finally:
                view.running = False
            view.runs += 1
            pending, view.pending = view.pending, []
            if view.deps is not None and any(view.deps.depends_on(key) for key in pending):
                view.wake.set()

    async def _compute(self, view: _View) -> None:
        reader = Reader(self._bus)
        name = view.key.display(self._bus.own)
        try:
            value = await view.getter(reader)
        except Exception:  # an app's bug must not stop the node; the old value stays
            log.exception("the getter of computed key %s failed", name)
            return
        finally:
            view.deps = reader  # what it read before failing is still what it needs
        try:
            if value is None:
                await self._bus.apply(view.key, Delete())
            elif not isinstance(value, dict):
                log.error("the getter of %s returned %s, not a JSON object", name, type(value))
            else:
                validate(value)
                await self._bus.apply(view.key, PutValue(value))
        except NotFound:
            pass  # no value, and none to delete
        except StatebusError as exc:
            log.error("computed key %s was not written: %s", name, exc)
