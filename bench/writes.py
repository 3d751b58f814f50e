"""Durable writes: statebus JSON PATCH and binary Yjs PUT vs a bare Starlette 204 endpoint.

Every system is driven by the same Node client (bench/js/load.mjs): 50
keep-alive connections, one request in flight each. In Yjs mode each
connection owns a Y.Doc with its own client id, so updates arrive in causal
order. The windows are interleaved and repeated (``Settings.repeats``), and
the best of each system counts, as for fan-out. wrk, when installed,
measures the 204 endpoint once more to show that the Node client is not what
saturates.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from bench._context import Context
from bench._errors import BenchError
from bench._node import JsonObject, LoadResult, run_load
from bench._procs import ServerProcess, busy_seconds
from bench._statebus import StatebusNode, check_holds
from bench._table import Row, at_least, ms, rate, times, unavailable

BENCH = "durable writes, 50 clients"
PATCH_TARGET = 0.4  # statebus durable PATCH over the bare 204 endpoint (issue 7)
WRK_SCRIPT = """wrk.method = "PATCH"
wrk.body = '{"c0":1}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
"""


@dataclass(frozen=True)
class Figures:
    load: LoadResult
    server_cpu_s: float
    other_cpu_s: float  # everything else on the machine meanwhile
    window_s: float  # from starting the client to its exit
    loop_cpu_s: float | None = None  # a statebus node's event-loop thread alone
    entries: int | None = None  # what a statebus node stored meanwhile (its seqs)

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / max(1, self.load.total) * 1e6

    @property
    def loop_us_per_request(self) -> float | None:
        if self.loop_cpu_s is None:
            return None
        return self.loop_cpu_s / max(1, self.load.total) * 1e6


def _load(ctx: Context, server: ServerProcess, name: str, **config: object) -> Figures:
    seconds = ctx.settings.seconds
    yjs = config.get("mode") == "yjs"
    full: JsonObject = {
        "port": server.port,
        "conns": ctx.settings.write_clients,
        "durationMs": int((seconds + 0.5) * 1000),
        "warmupMs": 500,
        "perConn": 3000 if yjs else 6000,  # the count bound; the time bound is durationMs
        **config,
    }
    node = server if isinstance(server, StatebusNode) else None
    if node is not None:
        full["token"] = node.token
    ctx.log(f"writes: {name}")
    loop_before = node.loop_cpu_seconds() if node is not None else 0.0
    head_before = node.head() if node is not None else 0
    cpu_before, busy_before = server.cpu_seconds(), busy_seconds()
    started = time.perf_counter()
    result = run_load(full, timeout=seconds + 60, log_path=ctx.path(f"logs/load-{name}.log"))
    window = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    loop = node.loop_cpu_seconds() - loop_before if node is not None else None
    other = busy_seconds() - busy_before - cpu - result.process_cpu_s
    ctx.note_other_load(other, window)
    entries = node.head() - head_before if node is not None else None
    return Figures(result, cpu, max(0.0, other), window, loop, entries)


def _wrk(ctx: Context, server: ServerProcess) -> float | str:
    if shutil.which("wrk") is None:
        return "wrk not installed"
    script = ctx.path("wrk-patch.lua")
    script.write_text(WRK_SCRIPT)
    url = f"http://127.0.0.1:{server.port}/204/wrk"
    ctx.log("writes: wrk calibration")
    argv = ["wrk", "-t2", f"-c{ctx.settings.write_clients}", f"-d{ctx.settings.seconds:g}s"]
    out = subprocess.run(
        [*argv, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=ctx.settings.seconds + 30,
        check=False,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(found.group(1)) if found else f"wrk printed no rate: {out[-200:]!r}"


PATCH_NAME = "statebus PATCH merge-patch (durable)"
APART_NAME = "statebus PATCH, each client its own Peer (durable, written apart)"
YJS_NAME = "statebus PUT Yjs update (durable)"


def _measure(ctx: Context) -> tuple[dict[str, Figures], float | str]:
    """Every system, interleaved, ``repeats`` times; the best window of each counts.

    Noise on a shared machine only ever slows a window down, and interleaving
    spreads a slow stretch over all of them (one window each put the same row
    anywhere from 0.48× to 0.71× the 204 across runs). Each statebus window
    writes a key of its own, so none starts with another's history."""
    found: dict[str, Figures] = {}

    def keep(name: str, figures: Figures) -> None:
        if name not in found or figures.load.rate > found[name].load.rate:
            found[name] = figures

    with (
        ctx.uvicorn("bare-put", "bench.apps.bare_put:create_app") as bare,
        StatebusNode(ctx, "statebus-writes", ctx.path("data/writes")) as node,
    ):
        wrk = _wrk(ctx, bare)
        for repeat in range(ctx.settings.repeats):
            keep("bare-204", _load(ctx, bare, "bare-204", method="PATCH", path="/204/k"))
            path = f"/bench/patch{repeat}"
            patched = _load(ctx, node, "statebus-patch", method="PATCH", path=path)
            keep(PATCH_NAME, _all_applied(node, path, patched))
            path = f"/bench/apart{repeat}"
            apart = _load(ctx, node, "statebus-apart", method="PATCH", path=path, peers=True)
            keep(APART_NAME, _all_applied(node, path, apart))
            keep("bare-apply", _load(ctx, bare, "bare-apply", mode="yjs", path="/apply/k"))
            path = f"/bench/yjs{repeat}"
            keep(
                YJS_NAME,
                _all_applied(node, path, _load(ctx, node, "statebus-yjs", mode="yjs", path=path)),
            )
    return found, wrk


def _all_applied(node: StatebusNode, path: str, figures: Figures) -> Figures:
    """The window's figures, once its key is read back holding every acknowledged write."""
    if not figures.load.acked:
        raise BenchError("load.mjs reported no per-connection acknowledgements")
    check_holds(node.read_json(path), path, figures.load.written())
    return figures


def run(ctx: Context) -> list[Row]:
    if ctx.node_problem is not None:
        return [unavailable(BENCH, "all", ctx.node_problem)]
    patch_target = f"≥ {PATCH_TARGET:g}× 204"
    try:
        found, wrk = _measure(ctx)
    except (BenchError, OSError) as exc:
        return [
            unavailable(BENCH, "bare Starlette and statebus", str(exc)),
            unavailable(BENCH, PATCH_NAME, str(exc), target=patch_target),
        ]
    bare_204, bare_apply = found["bare-204"], found["bare-apply"]
    note = _note(bare_204)
    if isinstance(wrk, float):
        note += f"; wrk -t2 -c50 here: {rate(wrk, ' req/s')} (Node client reaches "
        note += f"{bare_204.load.rate / wrk:.2f}× of wrk)"
    else:
        note += f"; {wrk}"
    rows = [
        Row(BENCH, "bare Starlette PATCH → 204", _result(bare_204), note=note),
        Row(
            BENCH,
            "bare Starlette PUT Yjs → pycrdt apply → 204",
            _result(bare_apply),
            times(bare_apply.load.rate / bare_204.load.rate, "204"),
            note=_note(bare_apply),
        ),
    ]
    for name in (PATCH_NAME, APART_NAME, YJS_NAME):
        figures = found[name]
        ratios, target = [], patch_target if name == PATCH_NAME else ""
        if _healthy(figures):
            r = figures.load.rate / bare_204.load.rate
            ratios.append(times(r, "204"))
            if name == PATCH_NAME:
                target = at_least(r, PATCH_TARGET)
            elif name == YJS_NAME:
                ratios.append(times(figures.load.rate / bare_apply.load.rate, "pycrdt apply"))
        rows.append(Row(BENCH, name, _result(figures), " · ".join(ratios), target, _note(figures)))
    return rows


def _healthy(f: Figures) -> bool:
    """At most 1% of answers were not 2xx, so the rate means something."""
    return f.load.requests > 0 and f.load.failed <= 0.01 * f.load.total


def _result(f: Figures) -> str:
    if not _healthy(f):
        return f"failed: answers {f.load.statuses}"
    load = f.load
    return f"{rate(load.rate, ' req/s')} · p50 {ms(load.p50_ms)} · p99 {ms(load.p99_ms)}"


def _note(f: Figures) -> str:
    load = f.load
    note = f"server {f.cpu_us_per_request:.0f} µs CPU/request"
    loop = f.loop_us_per_request
    if loop is not None:  # the rest: the store's writer process, the node's worker threads
        note += f" ({loop:.0f} on the event loop, {f.cpu_us_per_request - loop:.0f} off it)"
    if f.entries:  # acknowledged writes, warm-up included, per entry the node stored
        note += f"; {sum(load.acked) / f.entries:.1f} writes per log entry"
    note += f"; client {load.client_cpu_s / max(load.wall_s, 1e-9):.0%} CPU"
    if f.other_cpu_s > 0.1 * f.window_s:
        note += f"; other processes {f.other_cpu_s / f.window_s:.0%} CPU"
    if load.failed:
        note += f"; {load.failed} non-2xx answers {load.statuses}"
    return note
