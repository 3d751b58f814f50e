"""Replication: signed entries from node A to node B vs raw Ed25519 verification.

This is the hook for the federation issue. `measure()` is where the real run
goes once `statebus/federation` exists:

1. start node B, then node A with `--peer <B's node id>@127.0.0.1:<port>`;
2. write N entries to A with bench/js/load.mjs (binary Yjs PUTs, as the
   cold-open bench does) and time their arrival at B (a fanout.mjs-style
   marker subscriber on B, or B's state vector);
3. stop B, write 100,000 entries to A, start B again and time until B holds
   them all: the catch-up after a partition.

Until then the rows say why they are empty; the raw verification ceiling is
measured regardless (bench/raw.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench._context import Context
from bench._errors import BenchError, Unavailable
from bench._paths import REPO_ROOT
from bench._table import Row, at_least, rate, times, unavailable
from bench.raw import RawFigures

TARGET = 0.7  # replicated entries/s over raw verifications/s (issue 7)
CATCHUP_ENTRIES = 100_000


@dataclass(frozen=True)
class Figures:
    entries_per_s: float
    catchup_s: float
    note: str


def measure(ctx: Context) -> Figures:
    """Replicate from A to B for real. Not wired yet: see the module docstring."""
    if not (REPO_ROOT / "statebus" / "federation").exists():
        raise Unavailable("federation not built yet (statebus/federation missing)")
    raise Unavailable("federation exists; wire bench/replication.py:measure to it")


def run(ctx: Context, raw: RawFigures | None) -> list[Row]:
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
        Row(catchup, "statebus", f"{f.catchup_s:.2f} s"),
    ]
