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

NOISY = 0.25  # other processes' CPU, in cores, above which the run is flagged
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


def _noise(other_load: Sequence[float]) -> list[str]:
    if not other_load or max(other_load) < NOISY:
        return []
    mean = sum(other_load) / len(other_load)
    return [
        f"**Noisy run:** other processes used {mean:.0%} of a core on average and up to "
        f"{max(other_load):.0%} during the measured windows ({os.cpu_count()} cores in all). "
        "Ratios between rows measured at different moments are unreliable; see each row's note.",
        "",
    ]


def report(
    rows: Sequence[Row],
    *,
    node: str,
    seconds: float,
    took_s: float,
    other_load: Sequence[float] = (),
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# statebus bench",
        "",
        f"{when} · commit {_git_revision()} · {os.cpu_count()} cores, {_cpu_model()} · "
        f"loopback only · {seconds:g} s per measured window · whole run {took_s:.0f} s",
        "",
        _versions(node),
        "",
        *_noise(other_load),
        render(rows),
        "",
        "Ratios compare figures of this run only. See bench/README.md for what each row means.",
    ]
    return "\n".join(lines) + "\n"
