"""The store: every key an append-only log of signed Yjs updates.

A write is an :class:`Entry` appended durably before the HTTP answer; a read
merges a key's entries; a stream forwards them. Compaction replaces a prefix of
a key's log with one snapshot entry that covers it, signed by the namespace's
owner, so that the log stays short and every byte stays verifiable.

:class:`Store` is the interface (a small set of async methods) that a
server-grade backend can implement; :class:`SQLiteStore` is the embedded
default. The store imports nothing above it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from ..errors import StoreError

__all__ = ["DocLog", "Entry", "KeyInfo", "SQLiteStore", "Store", "StoreStats"]


@dataclass(slots=True, eq=False)
class Entry:
    """One signed Yjs update of one document: what is stored, streamed and forwarded.

    ``author`` signed (namespace, path, update); ``seq`` is this node's sequence
    number, set by the store once the entry is durable, and is the key's version.
    ``exists`` is local bookkeeping (not signed): whether the key holds a value
    once this entry is applied, so that listings need no document; ``sealed``
    likewise says that ``update`` is an encrypted payload, not a Yjs update.
    """

    key: str
    update: bytes
    author: str
    signature: bytes
    snapshot: bool = False
    exists: bool = True
    seq: int = 0
    sealed: bool = False
    grant: bytes = b""  # an encoded owner's grant, when a writer other than the owner signed


@dataclass(frozen=True, slots=True)
class DocLog:
    """A key's whole log: a snapshot entry first if compacted, then entries by seq."""

    entries: list[Entry] = field(default_factory=list)
    head: int = 0
    exists: bool = False


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters since open: how well group commit is batching."""

    commits: int
    entries: int


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key: str
    head: int
    exists: bool
    log_entries: int
    log_bytes: int


CommitListener = Callable[[list[Entry]], None]
# Told the outcome of an append whose caller stopped waiting for it: its entries, and
# None when they are stored (or were stored already), or why the append failed.
Abandoned = Callable[[Sequence[Entry], StoreError | None], None]


class Store(abc.ABC):
    """A durable op log. Opened and closed as an async context manager, once."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    def use_signer(self, secret_key: bytes) -> None:
        """The key to sign the entries this node authors with (they come unsigned, with
        messages): the 64-byte libsodium Ed25519 secret key (seed and public key)."""

    @abc.abstractmethod
    def listen(self, listener: CommitListener) -> None:
        """Call ``listener`` on the event loop with every committed batch, in seq order."""

    @abc.abstractmethod
    def listen_signed(self, listener: CommitListener) -> None:
        """Call ``listener`` on the event loop with every committed entry once it has its
        signature: peers' entries with their batch, this node's a little later (they
        are signed behind their commit), each entry once."""

    @abc.abstractmethod
    async def signed(self) -> None:
        """Sign every entry committed so far now (also those a previous run left), and
        return once their signatures are stored; with no signer yet, at once."""

    @abc.abstractmethod
    async def append(
        self,
        entries: Sequence[Entry],
        *,
        messages: Mapping[Entry, bytes] | None = None,
        abandoned: Abandoned | None = None,
    ) -> list[Entry]:
        """Store entries durably, in order; return those stored (with ``seq`` set).

        An entry whose signature is already stored is a replay and is skipped. An
        entry with no signature yet is one this node authors: the store signs
        ``messages[entry]`` with its signer (off the event loop) once the entry is
        durable, and sets the signature then (:meth:`listen_signed`); until it
        does, ``load`` and ``entries_after`` return the entry with none. A caller
        cancelled while it waits stops waiting, not the append: ``abandoned`` is
        then called with the outcome, once it is known.
        """

    @abc.abstractmethod
    async def compact(self, snapshot: Entry, upto: int, *, message: bytes | None = None) -> None:
        """Replace the key's entries with ``seq <= upto`` by ``snapshot``; one with no
        signature yet is signed as ``append`` signs, over ``message``."""

    @abc.abstractmethod
    async def load(self, key: str) -> DocLog:
        """The key's whole log."""

    @abc.abstractmethod
    async def entries_after(
        self, key: str, after: int, *, folder: bool = False, limit: int = 1000
    ) -> list[Entry]:
        """Entries with ``seq > after`` of one key, or of every key under a folder."""

    @abc.abstractmethod
    async def keys(
        self, folder: str, *, after: str = "", limit: int = 1000, deleted: bool = False
    ) -> list[KeyInfo]:
        """Keys under ``folder`` that hold a value (``deleted``: and those that held
        one), sorted, starting after ``after``."""

    @abc.abstractmethod
    async def sealed_keys(self) -> list[str]:
        """Keys whose log holds encrypted entries (documents sealed to some friends)."""

    @abc.abstractmethod
    async def info(self, key: str) -> KeyInfo | None:
        """The key's bookkeeping, or None when it was never written."""

    @property
    @abc.abstractmethod
    def stats(self) -> StoreStats: ...

    @abc.abstractmethod
    async def head(self) -> int:
        """The newest seq of the whole node (0 when empty)."""


from ._sqlite import SQLiteStore  # noqa: E402  (the default backend needs the interface)
