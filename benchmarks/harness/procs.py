"""The benchmark's processes: the load client, CPU pinning, and what is sampled.

Each gateway runs in its own process pinned to CPU 0 (``taskset``); the load client
(``voicegate loadtest``) and the stand-in share CPU 1. While a gateway runs, a thread samples its
CPU seconds (all threads, ``/proc/PID/stat``) and RSS every 0.25 s on ``time.monotonic()``, the
clock the load client's window is written in, so CPU and memory are read over exactly the
measured window.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.provenance import ROOT

PY = sys.executable
GATEWAY_CPU = "0"
CLIENT_CPU = "1"
SAMPLE_S = 0.25


def env() -> dict[str, str]:
    """A child's environment: this checkout's code, no AWS or voicegate settings of the caller."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOICEGATE_"))}
    out["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + str(ROOT)
    out["AWS_EC2_METADATA_DISABLED"] = "true"
    out["VOICEGATE_LOG_LEVEL"] = "warning"
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every process below it (a supervisor and its workers)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parent[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sampler:
    """CPU seconds and RSS of one process, every SAMPLE_S, on time.monotonic()."""

    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.samples.append((time.monotonic(), cpu_seconds(self.pid), rss_mb(self.pid)))
            self._stop.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop.set()

    def _at(self, t: float) -> tuple[float, float, float] | None:
        return min(self.samples, key=lambda s: abs(s[0] - t), default=None)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """CPU % of one core over [t0, t1], RSS at t1 and the idle RSS (first sample)."""
        a, b = self._at(t0), self._at(t1)
        if a is None or b is None or b[0] <= a[0]:
            return {}
        return {
            "cpu_percent": round(100 * (b[1] - a[1]) / (b[0] - a[0]), 1),
            "rss_mb": round(b[2], 1),
            "rss_idle_mb": round(self.samples[0][2], 1),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_port(port: int, proc: subprocess.Popen[Any]) -> None:
    """Until something listens on 127.0.0.1:``port`` (or ``proc`` exits: an error)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.5)
                return
        time.sleep(0.2)
    raise RuntimeError("gateway did not listen")


def loadtest(url: str, out: Path, calls: int, seconds: float, **opts: Any) -> dict[str, Any]:
    """``voicegate loadtest`` on CPU 1; its JSON document (calls that fail are in it)."""
    cmd = ["taskset", "-c", CLIENT_CPU, PY, "-m", "voicegate", "loadtest", url]
    cmd += ["--calls", str(calls), "--duration", str(seconds), "--json", str(out)]
    for key, value in opts.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=seconds + 300
    )
    if not out.exists():
        raise RuntimeError(f"loadtest exited {done.returncode}: {done.stderr.strip()[-400:]}")
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


__all__ = [
    "CLIENT_CPU",
    "GATEWAY_CPU",
    "PY",
    "SAMPLE_S",
    "Sampler",
    "cpu_seconds",
    "env",
    "free_port",
    "loadtest",
    "rss_mb",
    "tree_cpu_seconds",
    "wait_port",
]
