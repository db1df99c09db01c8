"""The long-call blocks of benchmarks/README.md (``long-calls``, ``long-calls-turns``...), one
per results file of ``python -m benchmarks.long_calls --name NAME``."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.provenance import read
from benchmarks.report.sections import long_table


def block(results: dict[str, Any], name: str) -> str:
    run = read(results)
    dirty = " (dirty tree)" if run.dirty else ""
    return "\n".join(
        [
            f"Run {run.started_utc or '(start not recorded)'} at commit "
            f"`{run.commit[:10]}`{dirty}, "
            f"{run.cpu_model}, load average {(run.load_before or [0])[0]:g} before / "
            f"{(run.load_after or [0])[0]:g} after (raw: `results/{name}.json`).",
            "",
            *long_table(results["summary"], results["settings"], name),
        ]
    )


__all__ = ["block"]
