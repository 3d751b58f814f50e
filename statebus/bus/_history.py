"""Replaying a key's log as the events a subscriber missed, off the event loop.

Each replayed change carries the value the key had right after it, as the live
event did, so a resumed stream is indistinguishable from one that never broke.
The work runs in a worker thread on a scratch Doc made (and dropped) there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio.to_thread
from pycrdt import Doc

from ..store import DocLog
from ..values import DocValue
from ._events import Event, Kind


def _replay(log: DocLog, after: int, key: str) -> list[Event] | None:
    doc: Doc[Any] = Doc()
    view = DocValue(doc)
    events: list[Event] = []
    for entry in log.entries:
        if entry.seq > after and entry.snapshot:
            return None  # compaction squashed the history the reader is missing
        doc.apply_update(entry.update)
        if entry.seq > after:
            value = None if view.deleted else view.read()
            events.append(
                Event(Kind.CHANGE, key, entry.seq, value=value, update=entry.update, entry=entry)
            )
    return events


def _value_at(log: DocLog, seq: int) -> dict[str, Any] | None:
    doc: Doc[Any] = Doc()
    view = DocValue(doc)
    for entry in log.entries:
        if entry.seq > seq:
            if entry.snapshot:
                return None  # squashed: that version is no longer in the log
            break
        doc.apply_update(entry.update)
    return {} if view.deleted else view.read()


async def value_at(log: DocLog, seq: int) -> dict[str, Any] | None:
    """The key's value as of node seq ``seq`` ({} if it held none), or None when
    compaction has squashed that version."""
    return await anyio.to_thread.run_sync(_value_at, log, seq)


def apply_all(doc: Doc[Any], updates: Iterable[bytes]) -> None:
    """Apply updates in one transaction: linear, where merge_updates grows quadratically."""
    with doc.transaction():
        for update in updates:
            doc.apply_update(update)


def _squash(updates: list[bytes]) -> bytes:
    doc: Doc[Any] = Doc()
    apply_all(doc, updates)
    return doc.get_update()


async def squash(log: DocLog) -> bytes:
    """The whole state the log leads to, re-encoded by a Doc (compaction that loses
    nothing; merging updates alone keeps the deleted content a Doc garbage-collects)."""
    return await anyio.to_thread.run_sync(_squash, [entry.update for entry in log.entries])


async def replay(log: DocLog, after: int, key: str) -> list[Event] | None:
    """The CHANGE events of ``log`` after seq ``after``, or None when the log no
    longer holds them one by one (the reader then needs the whole state)."""
    return await anyio.to_thread.run_sync(_replay, log, after, key)
