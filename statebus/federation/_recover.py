"""Recovery: a node that lost its disk fetches its own namespace back from a friend.

``statebus recover --from ID@HOST:PORT`` runs this on a data directory that
holds only the old ``identity.key``: it opens the store and the bus (no HTTP
server), dials the friend as a *passive* session (it asks for its own
namespace and serves nothing), lets the bus verify and store every entry, and
once the friend says ``caught-up`` checks every stored signature once more
and reports what came back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import anyio.to_thread

from ..bus import Bus
from ..datadir import DataDir
from ..errors import DataDirError, PeerError, PeerUnreachable
from ..identity import Identity, NodeId, SignedEntry, Verifier
from ..settings import Settings
from ..store import SQLiteStore
from ._address import PeerAddress
from ._hub import Hub
from ._link import PeerLink
from .policy import Policy

PAGE = 1000


@dataclass(frozen=True, slots=True)
class Recovered:
    """What ``recover`` brought back."""

    friend: str
    documents: int  # documents of the own namespace now stored (deleted ones too)
    values: int  # of which hold a value
    entries: int  # signed entries stored, every one verified as the node's own
    refused: int  # entries the friend sent that failed verification (not stored)
    seconds: float


async def recover(settings: Settings, identity: Identity, friend: PeerAddress) -> Recovered:
    """Fill an empty data directory with the node's own namespace, fetched from ``friend``.

    Waits as long as the friend keeps sending; bound it with ``anyio.fail_after``.
    """
    started = time.monotonic()
    datadir = DataDir(settings.data_dir)
    datadir.ensure()
    own = identity.node_id
    namespace = f"/~{own}/"
    async with SQLiteStore(datadir.database, synchronous=settings.synchronous) as store:
        if await store.head() > 0:
            raise DataDirError(
                f"{datadir.database} already holds entries; recover fills an empty data "
                "directory (move statebus.db away first)"
            )
        async with Bus(store, identity) as bus:
            hub = Hub(bus, Policy(own))
            try:
                link = PeerLink(
                    hub, identity, friend, heartbeat=settings.peer_heartbeat, passive=True
                )
                await _fetch(hub, link, namespace)
            finally:
                hub.close()
            status = hub.peer(friend.node_id)
            documents = await _documents(bus, namespace)
            entries = await _verify_all(bus, own, documents)
            values = len(await store.keys(namespace, limit=len(documents) + 1))
    return Recovered(
        str(friend), len(documents), values, entries, status.refused, time.monotonic() - started
    )


async def _fetch(hub: Hub, link: PeerLink, namespace: str) -> None:
    done = hub.want(namespace)
    failure: list[PeerError] = []

    async def connect(scope: anyio.CancelScope) -> None:
        try:
            await link.connect()
        except PeerError as exc:
            failure.append(exc)
        scope.cancel()

    async def finish(scope: anyio.CancelScope) -> None:
        await done.wait()
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(connect, tg.cancel_scope)
        tg.start_soon(finish, tg.cancel_scope)
    if done.is_set():
        return
    if failure:
        error = failure[0]
        raise type(error)(f"{link.address}: {error.detail}", peer=str(link.address))
    raise PeerUnreachable("the friend closed the connection early", peer=str(link.address))


async def _documents(bus: Bus, namespace: str) -> list[str]:
    found: list[str] = []
    after = ""
    while True:
        page = await bus.documents(namespace, after=after, limit=PAGE)
        found.extend(page)
        if len(page) < PAGE:
            return found
        after = page[-1]


async def _verify_all(bus: Bus, own: NodeId, documents: list[str]) -> int:
    """Check every stored signature again; return how many entries there are."""
    prefix = len(f"/~{own}")
    verifier = Verifier()
    count = 0
    for key in documents:
        log = await bus.log(key)
        items = [
            SignedEntry(NodeId(e.author), own, key[prefix:], e.update, e.signature)
            for e in log.entries
        ]
        verdicts = await anyio.to_thread.run_sync(verifier.verify_many, items)
        if not all(verdicts) or any(e.author != own for e in log.entries):
            raise DataDirError(f"an entry of {key} does not verify as {own}'s: not recovered")
        count += len(items)
    return count
