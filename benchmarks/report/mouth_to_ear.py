"""The ``mouth-to-ear`` block of benchmarks/README.md (``python -m benchmarks.mouth_to_ear``)."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.provenance import read

NAME = "mouth-to-ear"


def pipecat_line(meta: dict[str, Any]) -> list[str]:
    """What the Pipecat rows ran, so the figure can be reproduced: package and bot settings."""
    pipecat = meta.get("pipecat")
    if not pipecat:
        return []
    settings = ", ".join(f"{k}={v}" for k, v in pipecat.get("settings", {}).items())
    return ["", f"Pipecat: `{pipecat['package']}`; bot settings: {settings or 'unknown'}."]


def table(results: dict[str, Any]) -> str:
    meta, run = results["meta"], read(results)
    lines = [
        f"Run {run.started_utc}, commit `{run.commit[:10]}`"
        f"{' (dirty tree)' if run.dirty else ''}, {meta['chromium']}, {run.hardware}, "
        f"load average before {run.load_before} / after {run.load_after}. "
        f"Raw: `results/{NAME}.json`.",
        *pipecat_line(meta),
        "",
        "| system | mouth-to-ear median ms | min-max ms | p95 ms | N markers (calls) |",
        "|---|---|---|---|---|",
    ]
    for name, s in results["systems"].items():
        if "error" in s:
            lines.append(f"| {name} | not run: {s['error']} | | | |")
        elif not s.get("n"):
            lines.append(f"| {name} | no marker came back | | | 0 ({s.get('calls', 0)}) |")
        else:
            lines.append(
                f"| {name} | {s['median_ms']} | {s['min_ms']}-{s['max_ms']} | {s['p95_ms']} | "
                f"{s['n']} ({s['calls']}) |"
            )
    return "\n".join(lines)


__all__ = ["NAME", "pipecat_line", "table"]
