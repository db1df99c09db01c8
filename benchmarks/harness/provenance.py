"""What every results file says about where its figures come from: one schema, one reader.

A run's header (``meta`` of its results file) is made by :func:`start` before anything is
measured and completed by :func:`finish`; every benchmark writes the same keys::

    git_commit, git_dirty, git_dirty_files   the code measured (tracked files only)
    started_utc, finished_utc                ISO 8601, UTC, "Z"
    load_avg_before, load_avg_after          1/5/15-minute load averages
    cpu_model, cpus, machine, platform       the machine
    versions                                 Python and the packages on the media/model path

:func:`read` gives a :class:`Provenance` from any results file, including the ones committed
before this schema, whose headers used other key names (``commit``/``dirty``, ``git:
{commit, dirty}``, ``started``/``ended``, ``load_before``/``load_after``, a ``machine`` text).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from voicegate.testing.report import versions

ROOT = Path(__file__).resolve().parents[2]
DIRTY_FILES_KEPT = 20
"""A dirty tree's changed files listed in the header, at most."""
LEGACY_MACHINE = "x86_64"
"""The architecture of the offline-turn results written before it was recorded (they were all
measured on the same x86_64 machine as the other committed results)."""
_MACHINE_TEXT = re.compile(r"^(?P<machine>\S+) (?P<cpus>\d+) CPUs(?:, Python (?P<python>\S+))?$")


@dataclass(frozen=True)
class Provenance:
    """A run's header as every report reads it, whichever layout its file was written in."""

    commit: str
    dirty: bool
    dirty_files: tuple[str, ...] = ()
    started_utc: str | None = None
    finished_utc: str | None = None
    load_before: list[float] | None = None
    load_after: list[float] | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    machine: str | None = None
    platform: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def hardware(self) -> str:
        """``x86_64 2 CPUs``: the architecture and CPU count, as the tables quote them."""
        return f"{self.machine} {self.cpus} CPUs"


def load_avg() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded as every results file records them."""
    return [round(x, 2) for x in os.getloadavg()]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def start() -> dict[str, Any]:
    """The header of a run about to be measured: the code (taken before anything is written),
    the machine, the start time and the load average before."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty),
        "git_dirty_files": dirty.splitlines()[:DIRTY_FILES_KEPT],
        "started_utc": utc_now(),
        "load_avg_before": load_avg(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "versions": versions() | {"numpy": _version("numpy")},
    }


def finish(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the end time and the load average after the run."""
    meta["finished_utc"] = utc_now()
    meta["load_avg_after"] = load_avg()
    return meta


def read(doc: dict[str, Any]) -> Provenance:
    """The provenance of a results file (or of one part of it that carries its own)."""
    meta = doc.get("meta", doc)
    if "git_commit" in meta:
        return Provenance(
            commit=meta["git_commit"],
            dirty=meta["git_dirty"],
            dirty_files=tuple(meta.get("git_dirty_files", ())),
            started_utc=meta.get("started_utc"),
            finished_utc=meta.get("finished_utc"),
            load_before=meta.get("load_avg_before"),
            load_after=meta.get("load_avg_after"),
            cpu_model=meta.get("cpu_model"),
            cpus=meta.get("cpus"),
            machine=meta.get("machine"),
            platform=meta.get("platform"),
            versions=meta.get("versions", {}),
        )
    return _legacy(meta)


def _legacy(meta: dict[str, Any]) -> Provenance:
    """Headers written before the one schema: ``git: {commit, dirty}`` (Bedrock CPU, cluster),
    ``commit``/``dirty`` (mouth to ear, offline turn); a cluster part's ``load: [before,
    after]``; a ``machine`` text such as ``x86_64 2 CPUs, Python 3.12.1``."""
    git_state = meta.get("git", meta)
    loads = meta.get("load") or [None, None]
    text = _MACHINE_TEXT.match(meta.get("machine", ""))
    machine, cpus, python = (text["machine"], int(text["cpus"]), text["python"]) if text else (
        LEGACY_MACHINE if "cpus" in meta else None, meta.get("cpus"), None
    )  # fmt: skip
    return Provenance(
        commit=git_state["commit"],
        dirty=git_state["dirty"],
        started_utc=meta.get("started_utc", meta.get("started")),
        finished_utc=meta.get("ended"),
        load_before=meta.get("load_avg_before", meta.get("load_before", loads[0])),
        load_after=meta.get("load_avg_after", meta.get("load_after", loads[1])),
        cpus=cpus,
        machine=machine,
        versions={"python": python} if python else {},
    )


__all__ = ["ROOT", "Provenance", "cpu_model", "finish", "git", "load_avg", "read", "start"]
