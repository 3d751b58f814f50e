"""Completing a Doc built from a log that is out of causal order.

Applying a log in order is linear, but when an entry was stored before one it
depends on (entries relayed by several peers, or a Yjs client's update that
overtook another), yrs can leave parts of it pending for good, and a Doc's
encoded state (what ``squash`` keeps) drops pending parts. So, where that can
happen, every entry that would still change the Doc is applied again (its
dependencies are there now) until none would: a round or two in practice.

The Doc then holds everything, but its blocks may be split differently from a
Doc that saw the same entries in causal order, so its binary state would not
be byte-identical to its peers'. One merged update of the log gives the same
encoding as causal order; merging costs quadratic time in the log's length, so
it is done for logs up to ``MERGE_LIMIT`` entries, and only when the log was
found out of order.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from pycrdt import Doc, Snapshot, merge_updates

from ..coverage import Digest, lacks

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
MERGE_LIMIT = 4000


def _lacking(updates: list[bytes], snapshot: bytes) -> list[bytes]:
    digest = Digest.decode(snapshot)
    todo = []
    for update in updates:
        try:
            if lacks(update, digest):
                todo.append(update)
        except ValueError:
            continue  # not a Yjs update: applying it again would not help
    return todo


def _merged(updates: list[bytes]) -> bytes | None:
    unique = list(dict.fromkeys(updates))  # yrs can panic on an update given twice
    try:
        return unique[0] if len(unique) == 1 else merge_updates(*unique)
    except BaseException as exc:  # pyo3 panics derive from BaseException
        if type(exc).__name__ != "PanicException" and not isinstance(exc, ValueError):
            raise
        return None


async def complete(doc: Doc[Any], updates: list[bytes], key: str) -> Doc[Any]:
    """``doc`` with what it still lacks of ``updates`` applied again, or a Doc rebuilt
    from one merged update when that was needed and the log is short enough.

    The checks run in a worker thread (pure functions of bytes); Docs are only
    touched here, on the loop's thread.
    """
    snapshot = bytes(Snapshot.from_doc(doc).encode())
    rounds = 0
    while rounds < MAX_ROUNDS:
        todo = await anyio.to_thread.run_sync(_lacking, updates, snapshot)
        if not todo:
            break
        rounds += 1
        with doc.transaction():
            for update in todo:
                doc.apply_update(update)
        before, snapshot = snapshot, bytes(Snapshot.from_doc(doc).encode())
        if snapshot == before:
            break  # what is left waits for entries this node does not have yet
    else:
        log.warning("%s still lacks parts of its log after %d rounds", key, MAX_ROUNDS)
    if rounds == 0 or len(updates) > MERGE_LIMIT:
        return doc
    merged = await anyio.to_thread.run_sync(_merged, updates)
    if merged is None:
        return doc
    rebuilt: Doc[Any] = Doc()
    rebuilt.apply_update(merged)
    return rebuilt
