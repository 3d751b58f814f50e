"""Raw ceilings measured in the bench process itself: pycrdt apply and Ed25519 verify.

The Yjs log has the shape the cold-open bench writes over HTTP: 50 clients,
each with its own client id, each overwriting 20 fields of the root map
`data`, interleaved round-robin (every client's updates in causal order).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from pycrdt import Doc, Map, TransactionEvent

from bench._context import Context
from bench._errors import BenchError
from bench._table import Row, ms, rate

CLIENTS = 50
FIELDS = 20
CLIENT_ID_BASE = 100_000  # the Node clients use the same ids
VERIFY_ENTRIES = 15_000
ROUNDS = 3  # the best round counts: on a shared machine noise only ever slows a round down


def yjs_log(entries: int, *, clients: int = CLIENTS, fields: int = FIELDS) -> list[bytes]:
    """`entries` small Yjs v1 updates from `clients` writers, interleaved round-robin."""
    per_client = entries // clients
    logs: list[list[bytes]] = []
    for c in range(clients):
        doc: Doc[Map[int]] = Doc(client_id=CLIENT_ID_BASE + c)
        data: Map[int] = Map()
        doc["data"] = data
        log: list[bytes] = []

        def keep(event: TransactionEvent, log: list[bytes] = log) -> None:
            log.append(event.update)

        doc.observe(keep)
        for n in range(per_client):
            data[f"c{c}_{n % fields}"] = n
        logs.append(log)
    return [log[n] for n in range(per_client) for log in logs]


def apply_seconds(state: bytes, *, repeats: int = 5) -> float:
    """Best time of `repeats` to apply one update (a snapshot) to a fresh Doc.

    The best, not the median: on a shared machine noise only ever adds time.
    """
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        Doc().apply_update(state)
        times.append(time.perf_counter() - started)
    return min(times)


FIRST_APPLY = """
import sys, time
from pycrdt import Doc
state = open(sys.argv[1], "rb").read()
started = time.perf_counter()
Doc().apply_update(state)
print(time.perf_counter() - started)
"""


def first_apply_seconds(state: bytes, path: Path, *, processes: int = 3) -> float:
    """Best time, over ``processes`` fresh Python processes, of each one's first apply of
    ``state`` to a fresh Doc: what a node that has just started pays on top of
    :func:`apply_seconds` (its heap is not grown yet, its caches are cold)."""
    path.write_bytes(state)
    times = []
    for _ in range(processes):
        try:
            done = subprocess.run(
                [sys.executable, "-c", FIRST_APPLY, str(path)],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            times.append(float(done.stdout.strip()))
        except (subprocess.SubprocessError, ValueError) as exc:
            raise BenchError(f"a fresh process's first apply failed: {exc}") from exc
    return min(times)


def replay_seconds(log: list[bytes]) -> tuple[float, Doc[Any]]:
    """Time to apply a log to a fresh Doc one update at a time, and the Doc."""
    doc: Doc[Any] = Doc()
    started = time.perf_counter()
    for update in log:
        doc.apply_update(update)
    return time.perf_counter() - started, doc


def verify_rate(entries: list[bytes]) -> float:
    """Ed25519 verifications per second of (namespace, key, update) entries, one at a time.

    The best of a few rounds of VERIFY_ENTRIES // ROUNDS entries each.
    """
    signer = SigningKey.generate()
    namespace = b"n" * 56  # a node id is 56 characters
    signed = [signer.sign(namespace + b"\0/bench/key\0" + e) for e in entries[:VERIFY_ENTRIES]]
    verifier = signer.verify_key
    size = len(signed) // ROUNDS
    best = 0.0
    for r in range(ROUNDS):
        started = time.perf_counter()
        for message in signed[r * size : (r + 1) * size]:
            verifier.verify(message)
        best = max(best, size / (time.perf_counter() - started))
    return best


@dataclass(frozen=True)
class RawFigures:
    entries: int
    apply_rate: float
    snapshot_bytes: int
    snapshot_apply_s: float
    verify_rate: float


def measure(ctx: Context) -> RawFigures:
    ctx.log("raw: pycrdt apply and Ed25519 verify")
    log = yjs_log(ctx.settings.cold_entries)
    replay, doc = min((replay_seconds(log) for _ in range(ROUNDS)), key=lambda r: r[0])
    snapshot = doc.get_update()
    return RawFigures(
        entries=len(log),
        apply_rate=len(log) / replay,
        snapshot_bytes=len(snapshot),
        snapshot_apply_s=apply_seconds(snapshot),
        verify_rate=verify_rate(log),
    )


def rows(raw: RawFigures) -> list[Row]:
    bench = "raw ceilings (in-process)"
    log = f"{raw.entries:,}-update log"
    return [
        Row(
            bench,
            "pycrdt apply_update",
            rate(raw.apply_rate, " updates/s"),
            note=f"{log}, {CLIENTS} clients, one update at a time; best of {ROUNDS}",
        ),
        Row(
            bench,
            "pycrdt open the log's snapshot",
            ms(raw.snapshot_apply_s * 1000),
            note=f"{raw.snapshot_bytes / 1024:,.0f} KiB snapshot of the {log}; best of 5",
        ),
        Row(
            bench,
            "PyNaCl Ed25519 verify",
            rate(raw.verify_rate, " entries/s"),
            note=f"one (namespace, key, update) entry at a time, best of {ROUNDS}: "
            "the replication ceiling",
        ),
    ]
