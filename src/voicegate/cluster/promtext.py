"""Merging Prometheus text expositions of several processes into one, each sample labelled
with where it came from (``worker="0"``), so one scrape of a node describes all its workers.

The text format wants every metric family once (one HELP, one TYPE, then all its samples), so
families are gathered across inputs in the order they first appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["merge"]


@dataclass(slots=True)
class _Family:
    meta: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


def _label(line: str, name: str, value: str) -> str:
    """``metric{a="1"} 2`` -> ``metric{NAME="VALUE",a="1"} 2``."""
    extra = f'{name}="{value}"'
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        inner_start = brace + 1
        closing = line.startswith("}", inner_start)
        return line[:inner_start] + extra + ("" if closing else ",") + line[inner_start:]
    if space == -1:
        return line
    return f"{line[:space]}{{{extra}}}{line[space:]}"


def merge(texts: Iterable[tuple[str, str]], label: str = "worker") -> str:
    """``texts``: (label value, exposition text) pairs. Returns one exposition."""
    families: dict[str, _Family] = {}
    for value, text in texts:
        current: _Family | None = None
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    fresh = name not in families
                    current = families.setdefault(name, _Family())
                    if fresh or not any(m.split(None, 2)[1] == parts[1] for m in current.meta):
                        current.meta.append(line)
                continue
            if current is None:
                current = families.setdefault(line.split("{", 1)[0].split(" ", 1)[0], _Family())
            current.samples.append(_label(line, label, value))
    out: list[str] = []
    for family in families.values():
        out.extend(family.meta)
        out.extend(family.samples)
    return "\n".join(out) + "\n"
