"""The benchmark's processes: a stand-in, a gateway, the load client; and what is sampled.

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
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicegate.standin.scripted_turns import THINK_S

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".bench" / "pipecat"
PIPECAT = "pipecat-ai[aws-nova-sonic,webrtc,runner]==1.14.0"
PY = sys.executable
GATEWAY_CPU = "0"
CLIENT_CPU = "1"
SAMPLE_S = 0.25
KINDS = ("voicegate", "patched", "stock", "pipecat")
STOCK_KINDS = ("patched", "stock")
"""The gateways run from benchmarks/stock_gateway.py: no model hop, so on the turns workload they
run the turns rules in process (``--brain turns``) instead of asking the stand-in."""


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOICEGATE_"))}
    out["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + str(ROOT)
    out["AWS_EC2_METADATA_DISABLED"] = "true"
    out["VOICEGATE_LOG_LEVEL"] = "warning"
    return out


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def standin(
    tmp: Path, brain: str = "echo", session_limit: float | None = None, think_s: float = THINK_S
) -> Iterator[tuple[dict[str, Any], Path]]:
    """A fresh stand-in (benchmarks/standin_proc.py) on CPU 1: its client env and marks file."""
    marks = tmp / "marks.json"
    cmd = ["taskset", "-c", CLIENT_CPU, PY, "-m", "benchmarks.standin_proc"]
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


def gateway_cmd(kind: str, port: int, extra: list[str]) -> list[str]:
    if kind == "voicegate":
        return [PY, "-m", "voicegate", "serve", "--backend", "bedrock", "--port", str(port), *extra]
    if kind == "patched":  # the stock gateway's code with voicegate's aiortc patches
        return [PY, "-m", "benchmarks.stock_gateway", "--patched", "--port", str(port), *extra]
    if kind == "stock":
        return [PY, "-m", "benchmarks.stock_gateway", "--port", str(port), *extra]
    if kind == "pipecat":
        bot = str(ROOT / "benchmarks" / "pipecat_bot.py")
        return [str(BENCH_VENV / "bin" / "python"), bot, "--port", str(port)]
    raise ValueError(kind)


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


@contextlib.contextmanager
def gateway(
    kind: str, standin_env: dict[str, Any], tmp: Path, extra: list[str] | None = None
) -> Iterator[tuple[str, Sampler]]:
    """A fresh gateway on CPU 0 (its URL and CPU/RSS sampler). voicegate runs with the offer
    rate limit, the per-address connection cap and loop-lag shedding off: one load client makes
    every offer, and capacity is measured against the latency budget, not against a shedding
    threshold."""
    port = free_port()
    full = {k: str(v) for k, v in standin_env.items() if k != "think_ms"}
    full = {**env(), **full}
    # Every simulated caller comes from 127.0.0.1: the per-address caps are off too.
    full.update(
        VOICEGATE_MAX_SESSIONS="400",
        VOICEGATE_OFFER_RATE="0",
        VOICEGATE_MAX_LOOP_LAG_MS="0",
        VOICEGATE_MAX_CONNECTIONS_PER_IP="0",
    )
    if kind == "pipecat":
        full.pop("PYTHONPATH", None)
    log = open(tmp / f"{kind}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        ["taskset", "-c", GATEWAY_CPU, *gateway_cmd(kind, port, extra or [])],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full,
        cwd=ROOT,
    )
    sampler = Sampler(proc.pid)
    try:
        _wait_port(port, proc)
        sampler.start()
        yield f"http://127.0.0.1:{port}", sampler
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_port(port: int, proc: subprocess.Popen[Any]) -> None:
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


def ensure_pipecat() -> str | None:
    """Create .bench/pipecat from PyPI if needed; returns why it cannot run, or None."""
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == PIPECAT:
        return None
    base = subprocess.run(
        [str(ROOT / "scripts" / "find-python")], capture_output=True, text=True
    ).stdout.strip()
    try:
        if not python.exists():
            subprocess.run([base or "python3", "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PIPECAT], check=True, timeout=900
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"installing {PIPECAT} into {BENCH_VENV} failed: {exc}"
    stamp.write_text(PIPECAT)
    return None


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _pipecat_versions() -> dict[str, str]:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        return {}
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for p in ('pipecat-ai', 'aiortc', 'aws-sdk-bedrock-runtime', 'awscrt'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    with contextlib.suppress(ValueError):
        result: dict[str, str] = json.loads(done.stdout)
        return result
    return {}


def machine_meta() -> dict[str, Any]:
    """What a reader needs to reproduce or discount a run."""
    from voicegate.testing.report import versions

    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty),
        "git_dirty_files": dirty.splitlines()[:20],
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions() | {"numpy": _version("numpy")},
        "pipecat_venv": _pipecat_versions(),
    }


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
