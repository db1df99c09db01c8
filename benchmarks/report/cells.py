"""How a figure is written in every benchmark table: numbers, across-run cells, table rows."""

from __future__ import annotations

from typing import Any


def number(v: Any) -> str:
    """A figure as the tables write it: ``–`` for none, ``%g`` for numbers."""
    return "–" if v is None else f"{v:g}" if isinstance(v, float | int) else str(v)


def cell(agg: dict[str, Any], name: str) -> str:
    """``median (min–max)`` across runs; just the median when all runs agree."""
    m = agg.get(name)
    if not m:
        return "–"
    if m["min"] == m["max"]:
        return number(m["median"])
    return f"{number(m['median'])} ({number(m['min'])}–{number(m['max'])})"


def cells(agg: dict[str, Any], *keys: str) -> str:
    """Table cells (median and range across runs) for these figures, in this order."""
    return " | ".join(cell(agg, key) for key in keys)


def load_range(agg: dict[str, Any]) -> str:
    """The 1-minute load averages seen after a configuration's runs, lowest–highest."""
    la = agg.get("load_1min")
    return f"{la['min']:g}–{la['max']:g}" if la else "–"


def header(title: str, columns: list[str]) -> list[str]:
    """A configurations table's heading: the label, runs, the figures, the load."""
    return [
        f"| {title} | runs | " + " | ".join(columns) + " | load 1-min |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]


def rows(section: dict[str, Any], keys: list[str]) -> list[str]:
    """One row per configuration of a scenario: runs that worked, the figures, the load."""
    out = []
    for label, conf in section.items():
        agg = conf["agg"]
        out.append(f"| {label} | {agg['runs_ok']} | {cells(agg, *keys)} | {load_range(agg)} |")
    return out


__all__ = ["cell", "cells", "header", "load_range", "number", "rows"]
