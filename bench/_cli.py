"""`python -m bench`: run every benchmark, print one table, save it to bench/results/latest.md.

`python -m bench install` only installs the Node side (the Makefile's step).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence

from bench import coldopen, fanout, memory, raw, replication, writes
from bench._context import Context, Settings
from bench._errors import Unavailable
from bench._npm import install, node_version, sync_scripts
from bench._paths import RESULTS_DIR, WORK_DIR
from bench._report import report
from bench._table import Row

PARTS = ("fanout", "writes", "cold", "replication", "memory", "raw")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark statebus against bare Starlette, bare sse-starlette, "
        "Hocuspocus 3.4.4, raw pycrdt and raw Ed25519, all in one run on 127.0.0.1.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "install"),
        default="run",
        help="run (default): benchmark and report; install: only install the npm baselines",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=Settings.seconds,
        help="length of each measured window (default %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=Settings.repeats,
        help="interleaved windows per system (and size); the best counts (default %(default)s)",
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of: {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="print the table without writing bench/results/latest.md",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "install":
        install()
        return 0
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not only <= set(PARTS):
        parser.error(f"unknown part(s): {', '.join(sorted(only - set(PARTS)))}")

    run_dir = WORK_DIR / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    ctx = Context(Settings(seconds=args.seconds, repeats=max(1, args.repeats)), run_dir)
    node = "missing"
    try:
        node = node_version()
        ctx.log("installing the npm baselines unless present")
        install()
        sync_scripts()
    except Unavailable as exc:
        ctx.node_problem = f"Node side unavailable: {exc}"
    started = time.monotonic()

    rows: list[Row] = []
    raw_figures = raw.measure(ctx) if only & {"raw", "cold", "replication"} else None
    if "fanout" in only:
        rows += fanout.run(ctx)
    if "writes" in only:
        rows += writes.run(ctx)
    if "cold" in only:
        rows += coldopen.run(ctx, raw_figures)
    if "replication" in only:
        rows += replication.run(ctx, raw_figures)
    if "memory" in only:
        rows += memory.run(ctx)
    if "raw" in only and raw_figures is not None:
        rows += raw.rows(raw_figures)

    took = time.monotonic() - started
    text = report(rows, node=node, seconds=args.seconds, took_s=took, other_load=ctx.other_load)
    print(text)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "latest.md").write_text(text)
        ctx.log(f"saved {RESULTS_DIR / 'latest.md'}; server logs under {run_dir / 'logs'}")
    return 0
