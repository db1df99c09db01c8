"""Results files: where they live, the one way they are written, and combining parts of a run.

Every benchmark writes its results with :func:`write` (JSON with a one-space indent, as the
suite has always written them, so that combining parts again reproduces a committed file byte
for byte) under a header made by :mod:`benchmarks.harness.provenance`; reports read them with
:func:`load`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.harness.provenance import ROOT

RESULTS = ROOT / "benchmarks" / "results"
PART_KEYS = (
    "git_commit",
    "git_dirty",
    "started_utc",
    "finished_utc",
    "load_avg_before",
    "load_avg_after",
)
"""What a combined run keeps of each part's header."""


def write(path: Path, doc: dict[str, Any]) -> None:
    """The one formatter of every results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def load(name: str | Path) -> dict[str, Any]:
    """A results file by its name in benchmarks/results (or by its path)."""
    path = RESULTS / name if isinstance(name, str) else name
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def combine(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One results document from runs of the same mode that measured different scenarios.

    Parts are taken in the order they started. A scenario measured by more than one part comes
    from the newest of them (a section re-measured after a fix, say the turns of every system,
    replaces the older one whole; sections are never mixed run by run). Each part's commit,
    dirty flag, times and load stay on record (``meta["parts"]``, with the scenarios a newer part
    replaced under ``replaced``), and ``parts_changed_files`` lists what differs between their
    commits besides benchmarks/results (a reader judges whether it touched what was measured).
    A newer part that failed a scenario an older one measured is refused: leave one of them out
    rather than let a failure hide behind an older figure."""
    ordered = sorted(parts.items(), key=lambda item: item[1]["meta"]["started_utc"])
    docs = [doc for _, doc in ordered]
    if len({d["meta"]["mode"] for d in docs}) != 1:
        raise SystemExit("--combine: the parts are of different modes")
    measured = [[k for k in doc if k not in ("meta", "errors")] for doc in docs]
    owner: dict[str, int] = {}  # scenario -> index of the newest part that measured it
    for i, keys in enumerate(measured):
        owner.update(dict.fromkeys(keys, i))
    for i, doc in enumerate(docs):
        for scenario in doc.get("errors", {}):
            if scenario in owner and owner[scenario] < i:
                raise SystemExit(
                    f"--combine: {ordered[i][0]} failed {scenario}, which the older "
                    f"{ordered[owner[scenario]][0]} measured; leave one of them out"
                )
    meta = dict(docs[0]["meta"])
    meta["parts"] = [
        {
            "file": name,
            "scenarios": measured[i],
            "replaced": [k for k in measured[i] if owner[k] != i],
            **{k: doc["meta"].get(k) for k in PART_KEYS},
        }
        for i, (name, doc) in enumerate(ordered)
    ]
    commits = [d["meta"]["git_commit"] for d in docs]
    changed: set[str] = set()
    for commit in commits[1:]:
        names = subprocess.run(
            ["git", "diff", "--name-only", commits[0], commit, "--", ".", ":!benchmarks/results"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        changed.update(names)
    meta["parts_changed_files"] = sorted(changed)
    meta["git_dirty"] = any(d["meta"]["git_dirty"] for d in docs)
    meta["git_dirty_files"] = [f for d in docs for f in d["meta"].get("git_dirty_files", [])]
    meta["finished_utc"] = docs[-1]["meta"].get("finished_utc")
    meta["load_avg_after"] = docs[-1]["meta"].get("load_avg_after")
    out: dict[str, Any] = {"meta": meta}
    for i, doc in enumerate(docs):
        for key, value in doc.items():
            if key == "errors":  # an older part's failure that a newer one measured is gone
                kept = {k: v for k, v in value.items() if k not in owner}
                if kept:
                    out.setdefault("errors", {}).update(kept)
            elif key != "meta" and owner[key] == i:
                out[key] = value
    return out


__all__ = ["RESULTS", "combine", "load", "write"]
