"""Replication: signed entries from node A to node B, verified by B, vs raw pycrdt.

Two nodes run as separate processes (``python -m statebus serve``) on 127.0.0.1:

1. **catch-up**: A's data directory is filled first with ``catchup`` entries
   over ``DOCUMENTS`` keys (its own write path, ``Bus.apply``: signed, durable),
   as if written while B was away. B starts and is told to dial A
   (``POST /_peers``); the figure is the time until B holds all of them:
   digest exchange, then exactly the entries B lacks, each verified (Ed25519,
   in a worker thread) and applied.
2. **live**: the bench process is a dialling peer of B with its own key: it
   signs ``live`` entries of its own namespace, authenticates, opens its
   stream and POSTs its frames to ``/_fed/push`` in 256 KiB chunks, numbered,
   two in flight, exactly as a link does; B takes them in order and answers
   each POST once every entry in it is verified, applied and durable. The
   figure is entries per second over the whole push, the best of
   ``LIVE_ROUNDS`` pushes (each by a new author): the rate at which a node
   takes signed entries from a peer.
3. **raw**: the catch-up's updates applied to bare pycrdt Docs, one per key, in
   the bench process: the floor the catch-up is compared with.

Call it from anywhere with the statebus package importable::

    from bench.replication import replicate
    figures = replicate(Path("/tmp/replication"), live=20_000, catchup=100_000)

or ``PYTHONPATH=. python -m bench.replication [--live N] [--catchup N]``; the
harness calls :func:`measure` (``make bench``), which :func:`run` turns into rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from pycrdt import Doc, Map

from bench._errors import BenchError
from statebus.access import acl_key
from statebus.bus import Bus, PutValue
from statebus.federation import PUSH_HEADER
from statebus.federation._auth import Dial
from statebus.federation._order import PUSHES_IN_FLIGHT
from statebus.federation._session import CHUNK_BYTES
from statebus.federation._wire import encode_entry
from statebus.identity import Identity, NodeId, sign_entry
from statebus.keys import Key
from statebus.store import Entry, SQLiteStore

if TYPE_CHECKING:
    from bench._context import Context
    from bench._table import Row
    from bench.raw import RawFigures

TARGET = 0.7  # replicated entries/s over raw verifications/s (issue 7)
CATCHUP_ENTRIES = 100_000
LIVE_ENTRIES = 20_000
LIVE_ROUNDS = 3  # pushes of LIVE_ENTRIES each, by a new author each; the best counts
DOCUMENTS = 200
WRITERS = 64
DEADLINE = 600.0  # seconds for each wait, at most
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figures:
    entries_per_s: float  # live: signed entries a node takes from a peer's pushes, per second
    catchup_s: float  # catch-up of `catchup_entries` after a partition
    catchup_entries: int
    raw_apply_s: float  # the same updates applied to bare pycrdt Docs
    note: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _fill(data_dir: Path, count: int) -> tuple[str, list[bytes]]:
    """Write ``count`` entries into A's data directory, as A's own writes; return A's id
    and every update written (for the raw pycrdt comparison)."""
    identity = Identity.load_or_create(data_dir)
    async with (
        SQLiteStore(data_dir / "statebus.db", synchronous="NORMAL") as store,
        Bus(store, identity, compact_after=10**9) as bus,
    ):
        keys = [Key(bus.own, f"/bench/{d}") for d in range(DOCUMENTS)]

        async def writer(first: int) -> None:
            for n in range(first, count, WRITERS):
                await bus.apply(keys[n % DOCUMENTS], PutValue({"n": n}))

        async with anyio.create_task_group() as tg:
            for first in range(min(WRITERS, count)):
                tg.start_soon(writer, first)
        # private is the default: share the written keys so that B may receive them
        await bus.apply(acl_key(bus.own), PutValue({"/bench/": {"read": "public"}}))
        updates = [entry.update for key in keys for entry in (await bus.log(key.canonical)).entries]
    return identity.node_id, updates


def _raw_apply(updates: list[bytes]) -> float:
    """Seconds to apply the catch-up's updates to fresh pycrdt Docs, one per key."""
    per_doc = max(1, len(updates) // DOCUMENTS)
    started = time.perf_counter()
    for start in range(0, len(updates), per_doc):
        doc: Doc[Any] = Doc()
        for update in updates[start : start + per_doc]:
            doc.apply_update(update)
    return time.perf_counter() - started


class _Node:
    """``python -m statebus serve`` in its own process, logging to a file."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "statebus", "serve", "--port", str(self.port),
            "--data", str(data_dir), "--log-level", "warning",
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=environment, stdout=out, stderr=out, cwd=REPO
            )
        self.token = ""
        self.node_id = ""

    async def ready(self, http: httpx.AsyncClient) -> None:
        with anyio.fail_after(60):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the node in {self.data_dir} exited")
                try:
                    if (await http.get(f"{self.url}/_health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # polling another process's start
        self.token = (self.data_dir / "owner.token").read_text().strip()
        self.node_id = Identity.recorded_id(self.data_dir)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def head(self, http: httpx.AsyncClient) -> int:
        version: int = (await http.get(f"{self.url}/_health")).json()["version"]
        return version

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _until_head(node: _Node, http: httpx.AsyncClient, head: int) -> None:
    reached = 0
    with anyio.move_on_after(DEADLINE):
        while (reached := await node.head(http)) < head:  # noqa: ASYNC110 (another process's counter)
            await anyio.sleep(0.01)
        return
    raise BenchError(f"B holds {reached:,} entries after {DEADLINE:g} s, not {head:,}")


def _signed_entries(identity: Identity, count: int) -> list[bytes]:
    """``count`` framed entries of ``identity``'s namespace: each key's updates made by its
    own Doc in order, the keys interleaved."""
    docs = [Doc[Any]() for _ in range(DOCUMENTS)]
    made: list[list[bytes]] = [[] for _ in range(DOCUMENTS)]
    for d, doc in enumerate(docs):
        doc.observe(lambda event, d=d: made[d].append(event.update))
    frames = []
    for n in range(count):
        d = n % DOCUMENTS
        with docs[d].transaction():
            docs[d].get("data", type=Map)["n"] = n
        update = made[d][-1]
        path = f"/bench/{d}"
        signature = sign_entry(identity, identity.node_id, path, update)
        entry = Entry(f"/~{identity.node_id}{path}", update, identity.node_id, signature)
        frames.append(encode_entry(entry))
    return frames


async def _push(node: _Node, frames: list[bytes]) -> float:
    """Push framed entries to ``node`` as a dialling peer; entries per second.

    A push is answered 204 also when the node refuses some of its entries (it logs
    them): the rate counts only once the node's version has grown by every entry,
    and a push that left any out is a :class:`BenchError`, not a figure."""
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
        before = await node.head(http)
        rate = await _push_frames(http, node, frames)
        stored = await node.head(http) - before
    if stored < len(frames):
        raise BenchError(f"the node stored {stored:,} of the {len(frames):,} entries pushed")
    return rate


async def _push_frames(http: httpx.AsyncClient, node: _Node, frames: list[bytes]) -> float:
    """Dial ``node`` as a new peer and push the frames; entries per second."""
    dial = Dial.start(Identity.generate(), NodeId(node.node_id))
    answer = await http.post("/_fed/hello", json=dial.hello())
    answer.raise_for_status()
    admitted = await http.post("/_fed/auth", json=dial.proof(answer.json()))
    admitted.raise_for_status()
    headers = {"Authorization": f"Peer {admitted.json()['session']}"}
    async with http.stream("GET", "/_fed/stream", headers=headers) as stream:
        stream.raise_for_status()
        chunks: list[bytes] = []
        chunk = bytearray()
        for frame in frames:
            chunk += frame
            if len(chunk) >= CHUNK_BYTES:
                chunks.append(bytes(chunk))
                chunk.clear()
        if chunk:
            chunks.append(bytes(chunk))
        started = time.perf_counter()
        await _post_in_order(http, headers, chunks)
        return len(frames) / (time.perf_counter() - started)


async def _post_in_order(
    http: httpx.AsyncClient, headers: dict[str, str], chunks: list[bytes]
) -> None:
    """POST numbered chunks with ``PUSHES_IN_FLIGHT`` of them in flight, as a link does."""
    slots = anyio.Semaphore(PUSHES_IN_FLIGHT)

    async def post(number: int, body: bytes) -> None:
        try:
            numbered = {**headers, PUSH_HEADER: str(number)}
            (await http.post("/_fed/push", content=body, headers=numbered)).raise_for_status()
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        for number, body in enumerate(chunks):
            await slots.acquire()
            tg.start_soon(post, number, body)


async def _replicate(work: Path, live: int, catchup: int) -> Figures:
    a_id, updates = await _fill(work / "a", catchup)
    raw_s = _raw_apply(updates)
    rounds = [_signed_entries(Identity.generate(), live) for _ in range(LIVE_ROUNDS)]
    a = _Node(work / "a", work / "a.log")
    b = _Node(work / "b", work / "b.log")
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await a.ready(http)
            await b.ready(http)
            started = time.perf_counter()
            added = await http.post(
                f"{b.url}/_peers", json={"peer": f"{a_id}@127.0.0.1:{a.port}"}, headers=b.auth()
            )
            added.raise_for_status()
            await _until_head(b, http, catchup)
            catchup_s = time.perf_counter() - started
            # Noise only slows a run down: the best of a few pushes, as for the raw rows.
            live_rate = max([await _push(b, frames) for frames in rounds])
    finally:
        b.stop()
        a.stop()
    note = (
        f"{DOCUMENTS} keys; live: a peer's POSTs of 256 KiB, {PUSHES_IN_FLIGHT} in flight, "
        "each answered once durable, "
        f"best of {LIVE_ROUNDS} pushes of {live:,}; "
        f"catch-up {catchup / catchup_s:,.0f} entries/s, raw pycrdt apply {raw_s:.2f} s"
    )
    return Figures(live_rate, catchup_s, catchup, raw_s, note)


def replicate(work: Path, *, live: int = LIVE_ENTRIES, catchup: int = CATCHUP_ENTRIES) -> Figures:
    """Measure under ``work`` (two data directories, two logs); see the module docstring."""
    work.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_replicate(work, live, catchup))


# -- the harness (make bench) ---------------------------------------------------------


def measure(ctx: Context) -> Figures:
    """Replicate from A to B for real, under the run's scratch directory."""
    ctx.log(f"replication: {LIVE_ENTRIES:,} live entries, then {CATCHUP_ENTRIES:,} to catch up")
    return replicate(ctx.path("replication"), live=LIVE_ENTRIES, catchup=CATCHUP_ENTRIES)


def run(ctx: Context, raw: RawFigures | None) -> list[Row]:
    from bench._table import Row, at_least, rate, times, unavailable

    bench = "replication A → B, signed and verified"
    catchup = f"catch-up of {CATCHUP_ENTRIES:,} entries after a partition"
    target = f"≥ {TARGET:g}× raw verify"
    try:
        f = measure(ctx)
    except (BenchError, OSError) as exc:
        return [
            unavailable(bench, "statebus", str(exc), target=target),
            unavailable(catchup, "statebus", str(exc)),
        ]
    ratio, judged = "", target
    if raw is not None:
        r = f.entries_per_s / raw.verify_rate
        ratio, judged = times(r, "raw verify"), at_least(r, TARGET)
    return [
        Row(bench, "statebus", rate(f.entries_per_s, " entries/s"), ratio, judged, f.note),
        Row(
            catchup,
            "statebus",
            f"{f.catchup_s:.2f} s",
            times(f.catchup_s / f.raw_apply_s, "raw pycrdt apply"),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__)
    parser.add_argument("--live", type=int, default=LIVE_ENTRIES)
    parser.add_argument("--catchup", type=int, default=CATCHUP_ENTRIES)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="statebus-replication-"))
    try:
        f = replicate(work, live=args.live, catchup=args.catchup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"live A -> B: {f.entries_per_s:,.0f} signed entries/s taken from a peer's pushes")
    print(f"catch-up of {f.catchup_entries:,} entries: {f.catchup_s:.2f} s")
    print(f"raw pycrdt apply of the same updates: {f.raw_apply_s:.2f} s")


if __name__ == "__main__":
    main()
