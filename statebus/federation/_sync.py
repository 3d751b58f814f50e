"""Catch-up: each side of a link sends exactly the signed entries the other lacks.

For an interest ``k`` (a document, or a folder of documents), the side that
wants it (W) sends ``want`` and a *digest* of each of its documents under
``k``: the Yjs snapshot, i.e. state vector *and* delete set (a state vector
alone would miss entries that only delete). The other side (Q) answers, per
document, with those of its stored entries that would change W's copy
(:func:`statebus.coverage.lacks`), then ``public``: which of them may be
relayed to anyone, then ``need``: its own digests of the documents where W
holds something Q lacks, then ``caught-up``. W sends the
entries Q needs, then ``filled``. The entries travel as their author signed
them, and the receiver verifies and dedups them, so a resent entry is harmless.

Each function here is a job: an async iterator of encoded frames that a
session drains into its outbound stream, reading the bus as it goes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread

from ..coverage import EMPTY, Digest, lacks
from ..sealing import is_sealed
from ..store import Entry
from ._wire import encode_control, encode_entries

if TYPE_CHECKING:
    from ._session import Session

log = logging.getLogger(__name__)

PAGE = 500  # documents per listing page and per digest/need frame
ENTRIES_PER_FRAME_GROUP = 256
THREAD_AT = 64  # select lacking entries in a worker thread from this many on


def encode_digest(digest: bytes | None) -> str | None:
    return None if digest is None else base64.b64encode(digest).decode("ascii")


def _select(entries: list[Entry], theirs: Digest) -> list[Entry]:
    chosen = []
    for entry in entries:
        if is_sealed(entry.update):  # ciphertext: cannot be compared, sent whole
            chosen.append(entry)
            continue
        try:
            if lacks(entry.update, theirs):
                chosen.append(entry)
        except ValueError:
            log.error("stored entry %d of %s is not a Yjs update; not sent", entry.seq, entry.key)
    return chosen


async def lacking(session: Session, key: str, theirs: Digest) -> list[Entry]:
    """The entries of ``key`` stored here that a copy in state ``theirs`` lacks, up to
    the first this node has not signed yet: that one, and those after it, reach the
    peer live once signed (its interest is registered before it is answered)."""
    entries = (await session.bus.log(key)).entries
    for index, entry in enumerate(entries):
        if not entry.signature:
            entries = entries[:index]
            break
    if len(entries) >= THREAD_AT:
        return await anyio.to_thread.run_sync(_select, entries, theirs)
    return _select(entries, theirs)


async def documents(session: Session, interest: str) -> AsyncIterator[str]:
    """Documents under an interest that this peer may receive, sorted."""
    if not interest.endswith("/"):
        if session.may_read(interest):
            yield interest
        return
    after = ""
    while True:
        keys = await session.bus.documents(interest, after=after, limit=PAGE)
        for key in keys:
            if session.may_read(key):
                yield key
        if len(keys) < PAGE:
            return
        after = keys[-1]


async def _entries(session: Session, entries: list[Entry]) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(entries), ENTRIES_PER_FRAME_GROUP):
        group = entries[start : start + ENTRIES_PER_FRAME_GROUP]
        session.status.entries_out += len(group)
        yield encode_entries(group, session.hub.policy.is_public)


async def want(session: Session, interest: str) -> AsyncGenerator[bytes, None]:
    """W: ask for an interest, describing every document held under it."""
    yield encode_control("want", key=interest)
    page: list[list[str | None]] = []
    async for key in documents(session, interest):
        page.append([key, encode_digest(await session.bus.digest(key))])
        if len(page) >= PAGE:
            yield encode_control("digest", key=interest, docs=page)
            page = []
    if page:
        yield encode_control("digest", key=interest, docs=page)
    yield encode_control("digest-end", key=interest)


async def answer(
    session: Session, interest: str, theirs: dict[str, Digest]
) -> AsyncGenerator[bytes, None]:
    """Q: send what W lacks under an interest, then say what W holds that is missing here."""
    needs: list[list[str | None]] = []
    public: list[str] = []
    seen: set[str] = set()
    async for key in documents(session, interest):
        seen.add(key)
        if session.hub.policy.is_public(key):
            public.append(key)
        raw = await session.bus.digest(key)
        mine = Digest.decode(raw) if raw else EMPTY
        their = theirs.get(key)
        if raw is not None and (their is None or not their.covers(mine)):
            async for chunk in _entries(session, await lacking(session, key, their or EMPTY)):
                yield chunk
        if their is not None and not mine.covers(their):
            needs.append([key, encode_digest(raw)])
    needs.extend([key, None] for key in theirs if key not in seen)
    for start in range(0, len(public), PAGE):
        yield encode_control("public", key=interest, docs=public[start : start + PAGE])
    for start in range(0, len(needs), PAGE):
        yield encode_control("need", key=interest, docs=needs[start : start + PAGE])
    yield encode_control("caught-up", key=interest)


async def fill(
    session: Session, interest: str, needs: dict[str, Digest]
) -> AsyncGenerator[bytes, None]:
    """W: send what Q said it needs."""
    for key, theirs in needs.items():
        if session.may_read(key):
            async for chunk in _entries(session, await lacking(session, key, theirs)):
                yield chunk
    yield encode_control("filled", key=interest)
