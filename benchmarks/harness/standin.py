"""The Bedrock stand-in as a process of its own, launched the two ways benchmarks need it.

- :func:`benchmark_standin`: ``benchmarks/systems/standin_proc.py`` on the client's CPU, with
  the brain a workload needs (markers echo that notes marker arrivals, the long-call
  experiment's live-only echo, the turns brain);
- :func:`cli_standin`: ``voicegate standin ARGS`` exactly as a user starts it.

Both yield the environment that points a client (the AWS SDK, voicegate) at it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness.procs import CLIENT_CPU, PY, env
from benchmarks.harness.provenance import ROOT
from voicegate.standin.scripted_turns import THINK_S


@contextlib.contextmanager
def benchmark_standin(
    tmp: Path, brain: str = "echo", session_limit: float | None = None, think_s: float = THINK_S
) -> Iterator[tuple[dict[str, Any], Path]]:
    """A fresh stand-in (systems/standin_proc.py) on CPU 1: its client env and marks file."""
    marks = tmp / "marks.json"
    cmd = ["taskset", "-c", CLIENT_CPU, PY, "-m", "benchmarks.systems.standin_proc"]
    cmd += ["--cert-dir", str(tmp / "certs"), "--marks", str(marks), "--brain", brain]
    if session_limit:
        cmd += ["--session-limit", str(session_limit)]
    if brain == "turns":
        cmd += ["--think", str(think_s)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    info: dict[str, Any] = {}
    for _ in range(200):
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("STANDIN "):
            info = json.loads(line.removeprefix("STANDIN "))
            break
    if not info:
        proc.kill()
        proc.wait()
        raise RuntimeError("the stand-in did not start")
    try:
        yield info, marks
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def cli_standin(
    workdir: Path, args: tuple[str, ...] = ("--scenario", "reply:greet")
) -> Iterator[dict[str, str]]:
    """``voicegate standin ARGS`` as a subprocess; yields the environment it prints for clients
    (endpoint, CA file, keys)."""
    proc = subprocess.Popen(
        [PY, "-m", "voicegate", "standin", "--port", "0", "--cert-dir", str(workdir / "certs"),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_cli_env(), cwd=ROOT,
    )  # fmt: skip
    found: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("# voicegate stand-in ready"):
                break
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                found[key] = value
        else:
            raise RuntimeError("the stand-in exited before it was ready")
        yield found
    finally:
        proc.terminate()
        proc.wait(15)


def _cli_env() -> dict[str, str]:
    """The caller's environment with this checkout's code first (keys a user set are kept: the
    stand-in prints only its own built-in test key)."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), out.get("PYTHONPATH")) if p)
    return out


__all__ = ["benchmark_standin", "cli_standin"]
