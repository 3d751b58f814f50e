"""Entries from peers: where they may be stored, whose signature they carry, what they add.

A peer sends entries exactly as their author stored them. :class:`Intake` keeps
those that are signed by the owner of the namespace they claim (``/~X/...``
only when X signed it; a node's own namespace coming back from a friend is
the same rule) and whose signature holds, verifying chunks of them in worker
threads while the loop applies the chunks already checked. :func:`integrate` applies one
to its Doc and says whether it changed anything, only repeated what the Doc
holds, or has parts that wait for dependencies still missing (Yjs keeps those
pending). :class:`Waiting` remembers the latter, because yrs does not always
finish integrating pending parts applied out of causal order (nor does applying
such a log in order); a Doc that has them is rebuilt from its log and completed
(``_complete``) once more arrives.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from ..coverage import waiting
from ..errors import BadSignature, DecryptionError, InvalidKey, InvalidNodeId, ProtocolError
from ..grants import Grant, covers
from ..identity import NodeId, SignedEntry, Verifier
from ..keys import Key, parse_canonical
from ..sealing import DocumentKeys
from ..store import Entry, Store
from ._complete import complete
from ._docs import DocCache, LiveDoc
from ._history import apply_all
from ._sealed import Sealer, is_sealed

log = logging.getLogger(__name__)

MAX_WAITING_KEYS = 10_000
MAX_WAITING_PER_KEY = 1_000


@dataclass(slots=True)
class Accepted:
    """What :meth:`Bus.accept` did with a batch: stored, refused (with why), or redundant."""

    stored: list[Entry] = field(default_factory=list)
    refused: list[tuple[Entry, str]] = field(default_factory=list)
    redundant: int = 0


def placement(
    entry: Entry,
    key: Key | str,
    granted: Callable[[Entry, Key], str | None] = lambda entry, key: "no grants here",
) -> Key | str:
    """The entry's key if it may be stored there, else why not (``key``: its parse).

    Its author must be the namespace's owner, or a writer the owner granted the
    path (``granted`` checks the grant the entry carries)."""
    if isinstance(key, str):
        return key
    if key.is_folder:
        return f"{entry.key} is a folder, which holds no entries"
    if entry.author != key.namespace:
        if not entry.grant:
            return (
                f"signed by {entry.author[:16]}…, not by {key.namespace[:16]}…, "
                f"owner of {entry.key}"
            )
        why = granted(entry, key)
        if why is not None:
            return why
    return key


def parse_entry_key(text: str) -> Key | str:
    """A canonical key, or why it is not one."""
    try:
        return parse_canonical(text)
    except InvalidKey as exc:
        return f"bad key {text[:80]!r}: {exc.detail}"


class Outcome(enum.Enum):
    CHANGED = "changed"
    WAITING = "waiting"  # stored: some parts wait in the Doc for missing dependencies
    REDUNDANT = "redundant"  # the Doc held all of it: a replay, or covered by a snapshot
    MALFORMED = "malformed"


def apply_update(doc: Doc[Any], update: bytes) -> bool:
    """Apply a Yjs update; False if yrs cannot decode it (its panics included)."""
    try:
        doc.apply_update(update)
    except ValueError:
        return False
    except BaseException as exc:  # pyo3 panics derive from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        return False
    return True


def integrate(live: LiveDoc, update: bytes) -> tuple[Outcome, bool]:
    """Apply a peer's update to its Doc (no await: one transaction) and classify it;
    also whether the key holds a value after it."""
    live.take_update()
    if not apply_update(live.doc, update):
        return Outcome.MALFORMED, False
    changed = live.take_update() is not None
    with live.doc.transaction():  # one for both reads (each would open its own)
        state = live.doc.get_state()
        exists = not live.view.deleted
    if waiting(update, state):
        return Outcome.WAITING, exists
    return (Outcome.CHANGED if changed else Outcome.REDUNDANT), exists


class Waiting:
    """Per key, the stored updates whose parts still wait in its Doc. Owned by the bus."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[str, list[bytes]] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def add(self, key: str, update: bytes) -> None:
        updates = self._by_key.setdefault(key, [])
        self._by_key.move_to_end(key)
        if len(updates) < MAX_WAITING_PER_KEY:
            updates.append(update)
        while len(self._by_key) > MAX_WAITING_KEYS:
            dropped, _ = self._by_key.popitem(last=False)
            log.warning("forgot the pending parts of %s (too many keys wait)", dropped)

    def recheck(self, live: LiveDoc) -> None:
        """Forget the updates of ``live``'s key that its Doc now integrates fully."""
        updates = self._by_key.get(live.key)
        if updates is None:
            return
        state = live.doc.get_state()
        still = [update for update in updates if waiting(update, state)]
        if still:
            self._by_key[live.key] = still
        else:
            del self._by_key[live.key]


Remember = Callable[[LiveDoc, Entry], None]


Placed = list[tuple[Entry, Key]]


@dataclass(slots=True)
class Checked:
    """A batch from a peer whose signatures are being verified (:meth:`Intake.check`)."""

    entries: Sequence[Entry]
    misplaced: list[tuple[Entry, str]]  # entries that may not be stored where they claim
    chunks: list[Placed]  # the others, in order, in chunks of VERIFY_CHUNK
    verdicts: list[asyncio.Future[list[bool]]]  # per chunk, one per entry

    def cancel(self) -> None:
        """Drop what is not verified yet (the batch will not be staged)."""
        for verdict in self.verdicts:
            verdict.cancel()


VERIFY_CHUNK = 64  # signatures checked per task of the verifying threads
VERIFYING_THREADS = max(2, min(8, os.cpu_count() or 2))
KEY_CACHE = 4096


class Intake:
    """The bus's side of :meth:`Bus.accept`: checks, applies, and settles peer entries."""

    def __init__(
        self,
        docs: DocCache,
        store: Store,
        sealer: Sealer | None = None,
        plain: dict[Entry, bytes] | None = None,
        *,
        own: NodeId | None = None,
        may_write: Callable[[NodeId, str], bool] = lambda writer, key: False,
    ) -> None:
        self._own = own
        self._may_write = may_write  # the own sharing rules: who writes what, now
        self._grants: OrderedDict[tuple[str, str, bytes], bool] = OrderedDict()
        self._docs = docs
        self._store = store
        self._sealer = sealer
        self._plain = plain if plain is not None else {}  # a sealed entry's Yjs update
        self._reopen: set[str] = set()  # sealed Docs that learned a key: rebuild them
        self._verifier = Verifier()
        # Every chunk of a batch is queued here at once, so the threads go from one to
        # the next without waiting for the loop, which applies each as it is done.
        # libsodium verifies without the GIL (``_sodium``).
        self._verifying = ThreadPoolExecutor(VERIFYING_THREADS, "statebus-verify")
        self._waiting = Waiting()
        self._keys: OrderedDict[str, Key | str] = OrderedDict()

    def _granted(self, entry: Entry, key: Key) -> str | None:
        """Why a writer's entry may not be stored under ``key``, or None if it may: the
        namespace's owner granted its author the path (checked once per grant), and,
        in this node's own namespace, the sharing rules still say so."""
        try:
            grant = Grant.decode(entry.grant)
        except ProtocolError as exc:
            return exc.detail
        if not covers(grant.path, key.path):
            return f"the grant of {grant.path} does not cover {key.path}"
        known = (key.namespace, entry.author, entry.grant)
        if known not in self._grants:
            try:
                grant.verify(key.namespace, NodeId(entry.author))
            except (BadSignature, InvalidNodeId) as exc:
                return exc.detail
            self._grants[known] = True
            if len(self._grants) > KEY_CACHE:
                self._grants.popitem(last=False)
        if key.namespace == self._own and not self._may_write(NodeId(entry.author), key.canonical):
            return f"{entry.author[:16]}… may no longer write {key.path} here"
        return None

    def _parse(self, text: str) -> Key | str:
        found = self._keys.get(text)
        if found is None:
            found = self._keys[text] = parse_entry_key(text)
            if len(self._keys) > KEY_CACHE:
                self._keys.popitem(last=False)
        return found

    def check(self, entries: Sequence[Entry]) -> Checked:
        """Place a batch's entries and queue the signatures of those that may be stored
        where they claim for the verifying threads, all at once (no await): a batch that
        waits for its turn is verified meanwhile, and a misplaced entry never is."""
        misplaced: list[tuple[Entry, str]] = []
        placed: Placed = []
        for entry in entries:
            where = placement(entry, self._parse(entry.key), self._granted)
            if isinstance(where, str):
                misplaced.append((entry, where))
            else:
                placed.append((entry, where))
        chunks = [placed[i : i + VERIFY_CHUNK] for i in range(0, len(placed), VERIFY_CHUNK)]
        return Checked(entries, misplaced, chunks, [self._submit(chunk) for chunk in chunks])

    def _submit(self, chunk: Placed) -> asyncio.Future[list[bool]]:
        items = [
            SignedEntry(NodeId(e.author), k.namespace, k.path, e.update, e.signature)
            for e, k in chunk
        ]
        return asyncio.wrap_future(self._verifying.submit(self._verifier.verify_many, items))

    async def stage(
        self, checked: Checked, remember: Remember
    ) -> tuple[Accepted, list[tuple[LiveDoc, Entry]]]:
        """Apply the placed entries of a checked batch whose signatures hold, each as soon
        as its chunk is verified; return the verdicts and the writes to append (each noted
        as applying to its Doc)."""
        result = Accepted(refused=list(checked.misplaced))
        writes: list[tuple[LiveDoc, Entry]] = []
        try:
            for chunk, verdict in zip(checked.chunks, checked.verdicts, strict=True):
                for (entry, key), ok in zip(chunk, await verdict, strict=True):
                    if not ok:
                        reason = f"bad signature on {key.canonical} by {entry.author[:16]}…"
                        result.refused.append((entry, reason))
                        continue
                    live = await self._docs.get(entry.key)
                    if self._apply(live, key, entry, result):
                        remember(live, entry)
                        live.applying(entry)
                        writes.append((live, entry))
        finally:
            checked.cancel()  # the caller left: chunks not yet started are dropped
        if result.refused:  # one line per batch: a bad peer must not flood the log
            entry, reason = result.refused[0]
            more = len(result.refused) - 1
            log.warning("refused an entry for %s: %s (and %d more)", entry.key[:120], reason, more)
        return result, writes

    def close(self) -> None:
        """Stop the verifying threads once their work is done (nothing new comes)."""
        self._verifying.shutdown(wait=False, cancel_futures=True)

    def _apply(self, live: LiveDoc, key: Key, entry: Entry, result: Accepted) -> bool:
        """Apply one verified entry; whether it is to be stored."""
        if is_sealed(entry.update):
            return self._apply_sealed(live, key, entry, result)
        outcome, exists = integrate(live, entry.update)
        if outcome is Outcome.MALFORMED:
            result.refused.append((entry, f"not a Yjs v1 update ({entry.key})"))
            return False
        if outcome is Outcome.REDUNDANT:
            result.redundant += 1
            return False
        if outcome is Outcome.WAITING:
            self._waiting.add(entry.key, entry.update)
        entry.snapshot, entry.seq = False, 0
        entry.exists = exists
        return True

    def _apply_sealed(self, live: LiveDoc, key: Key, entry: Entry, result: Accepted) -> bool:
        """A sealed entry: kept (and relayed) whether or not this node can open it;
        opened and applied when one of its keys was sealed to this node."""
        if self._sealer is None:
            result.refused.append((entry, "this node does not take sealed entries"))
            return False
        if live.sealed is None:
            live.sealed = DocumentKeys()
        known = len(live.sealed.keys)
        try:
            update = self._sealer.open_entry(key, live.sealed, entry)
        except DecryptionError as exc:
            result.refused.append((entry, f"{exc.detail} ({entry.key})"))
            return False
        if len(live.sealed.keys) > known and live.head:
            self._reopen.add(live.key)  # updates it held unopened may open now
        if update is not None:
            if integrate(live, update)[0] is Outcome.MALFORMED:
                result.refused.append((entry, f"a sealed update is not Yjs ({entry.key})"))
                return False
            self._plain[entry] = update
        entry.snapshot, entry.seq, entry.sealed = False, 0, True
        entry.exists = live.readable and not live.view.deleted
        return True

    def waits(self, key: str) -> bool:
        return key in self._waiting

    async def settle(self, writes: list[tuple[LiveDoc, Entry]]) -> None:
        """Rebuild from their logs the Docs just written that hold pending parts, and
        the sealed ones that just learned a key to updates they already held."""
        for key in list(self._reopen):
            live = self._docs.peek(key)
            if live is None or not live.pending:
                self._reopen.discard(key)
                self._docs.drop(key)  # reloaded (and opened) at its next use
        for key in dict.fromkeys(entry.key for _, entry in writes):
            if key not in self._waiting:
                continue
            live = self._docs.peek(key)
            if (live is not None and live.pending) or self._docs.draining(key):
                continue  # a write is on its way to disk; the next batch retries
            stored = await self._store.load(key)
            doc: Doc[Any] = Doc()
            updates = [entry.update for entry in stored.entries]
            apply_all(doc, updates)
            doc = await complete(doc, updates, key)
            live = self._docs.peek(key)
            if (
                live is not None and (live.pending or live.head != stored.head)
            ) or self._docs.draining(key):
                continue  # a write started or committed meanwhile; the next batch retries
            rebuilt = LiveDoc(key, doc, stored.head, stored)
            self._docs.replace(rebuilt)
            self._waiting.recheck(rebuilt)
