"""Memory: resident size per idle key held open and per idle SSE subscriber.

A fresh node; RSS (VmRSS from /proc/PID/status) before, after writing 10,000
keys once each (a write opens the key), and with 1000 SSE subscribers of one
key connected and idle.
"""

from __future__ import annotations

import time

from bench._context import Context
from bench._errors import BenchError, ClientFailed
from bench._node import FanoutClient, run_load
from bench._statebus import StatebusNode
from bench._table import Row, at_most, kib, unavailable

KEY_TARGET_KIB = 10.0
SUBSCRIBER_TARGET_KIB = 20.0
SETTLE_S = 1.0


def measure(ctx: Context) -> tuple[float, float, str]:
    """KiB per idle key, KiB per idle subscriber, and a note."""
    keys = ctx.settings.idle_keys
    subs = ctx.settings.idle_subscribers
    conns = min(50, keys)
    with StatebusNode(ctx, "statebus-memory", ctx.path("data/memory")) as node:
        time.sleep(SETTLE_S)
        rss_empty = node.rss_kib()
        ctx.log(f"memory: opening {keys:,} keys")
        config = {
            "port": node.port,
            "token": node.token,
            "conns": conns,
            "perConn": keys // conns,
            "mode": "put-keys",
            "path": "/bench/idle/k{c}-{n}",
            "durationMs": 60_000,
            "warmupMs": 0,
        }
        written = run_load(config, timeout=90, log_path=ctx.path("logs/load-memory.log"))
        if written.failed or written.total < keys // conns * conns:
            raise ClientFailed(f"opening keys got answers {written.statuses}")
        time.sleep(SETTLE_S)
        rss_keys = node.rss_kib()
        ctx.log(f"memory: {subs:,} idle SSE subscribers")
        idle = {
            "kind": "sse",
            "port": node.port,
            "token": node.token,
            "path": "/bench/idle-sse",
            "subs": subs,
            "warmup": 0,
            "maxEvents": 0,
        }
        with FanoutClient(idle, log_path=ctx.path("logs/fanout-idle.log")) as client:
            client.wait_ready(timeout=60)
            time.sleep(SETTLE_S)
            rss_subs = node.rss_kib()
            client.go()
            client.result(timeout=30)
    note = f"RSS {rss_empty / 1024:,.1f} → {rss_keys / 1024:,.1f} → {rss_subs / 1024:,.1f} MiB"
    return (rss_keys - rss_empty) / keys, (rss_subs - rss_keys) / subs, note


def run(ctx: Context) -> list[Row]:
    keys_bench = f"memory, {ctx.settings.idle_keys:,} idle keys opened once"
    subs_bench = f"memory, {ctx.settings.idle_subscribers:,} idle SSE subscribers"
    key_target = f"≤ {KEY_TARGET_KIB:g} KiB/key"
    sub_target = f"≤ {SUBSCRIBER_TARGET_KIB:g} KiB/subscriber"
    if ctx.node_problem is not None:
        return [
            unavailable(keys_bench, "statebus", ctx.node_problem, target=key_target),
            unavailable(subs_bench, "statebus", ctx.node_problem, target=sub_target),
        ]
    try:
        per_key, per_sub, note = measure(ctx)
    except (BenchError, OSError) as exc:
        return [
            unavailable(keys_bench, "statebus", str(exc), target=key_target),
            unavailable(subs_bench, "statebus", str(exc), target=sub_target),
        ]
    return [
        Row(
            keys_bench,
            "statebus",
            f"+{kib(per_key)}/key",
            target=at_most(per_key, KEY_TARGET_KIB, " KiB"),
            note=note,
        ),
        Row(
            subs_bench,
            "statebus",
            f"+{kib(per_sub)}/subscriber",
            target=at_most(per_sub, SUBSCRIBER_TARGET_KIB, " KiB"),
            note="baselines: see the fan-out rows' RSS per subscriber",
        ),
    ]
