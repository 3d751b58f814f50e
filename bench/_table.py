"""Rows of the result table, their formatting, and how targets are judged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure for one system, and its same-run ratio where one applies."""

    bench: str
    system: str
    result: str
    ratio: str = ""
    target: str = ""
    note: str = ""


def unavailable(bench: str, system: str, reason: str, *, target: str = "") -> Row:
    return Row(bench, system, "not available", target=target, note=reason)


def rate(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}"


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def kib(value: float) -> str:
    return f"{value:,.1f} KiB"


def times(value: float, against: str) -> str:
    return f"{value:.2f}× {against}"


def at_least(value: float, target: float) -> str:
    """Judge a higher-is-better ratio against its target."""
    verdict = "met" if value >= target else "MISSED"
    return f"≥ {target:g}×: {verdict}"


def at_most(value: float, target: float, unit: str = "×") -> str:
    """Judge a lower-is-better figure against its target."""
    verdict = "met" if value <= target else "MISSED"
    return f"≤ {target:g}{unit}: {verdict}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: Sequence[Row]) -> str:
    """The table as GitHub markdown (also readable as plain text)."""
    header = ("benchmark", "system", "result", "ratio (same run)", "target", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = (row.bench, row.system, row.result, row.ratio, row.target, row.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)
