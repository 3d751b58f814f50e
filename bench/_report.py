"""The printed and saved report: what ran where, then the one table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench._paths import REPO_ROOT
from bench._table import Row, render

PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "sse-starlette", "pycrdt", "pynacl")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" (uncommitted changes)" if git("status", "--porcelain") else "")


def _versions(node: str) -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return f"Python {platform.python_version()}, {', '.join(found)}; Node {node}"


def report(rows: Sequence[Row], *, node: str, seconds: float, took_s: float) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# statebus bench",
        "",
        f"{when} · commit {_git_revision()} · {os.cpu_count()} cores, {_cpu_model()} · "
        f"loopback only · {seconds:g} s per measured window · whole run {took_s:.0f} s",
        "",
        _versions(node),
        "",
        render(rows),
        "",
        "Ratios compare figures of this run only. See bench/README.md for what each row means.",
    ]
    return "\n".join(lines) + "\n"
