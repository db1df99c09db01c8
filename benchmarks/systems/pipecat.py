"""The Pipecat peer's own virtualenv (.bench/pipecat, from PyPI), its versions and settings.

Pipecat runs only from there (``pipecat_peer/``), never with voicegate's code or packages.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import Any

from benchmarks.harness.provenance import ROOT

BENCH_VENV = ROOT / ".bench" / "pipecat"
PIPECAT = "pipecat-ai[aws-nova-sonic,webrtc,runner]==1.14.0"
PEER = ROOT / "benchmarks" / "systems" / "pipecat_peer"
BOT = PEER / "pipecat_bot.py"
RUNNER_BOT = PEER / "pipecat_runner_bot.py"
PYTHON = BENCH_VENV / "bin" / "python"


def ensure_pipecat() -> str | None:
    """Create .bench/pipecat from PyPI if needed; returns why it cannot run, or None."""
    stamp = BENCH_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == PIPECAT:
        return None
    base = subprocess.run(
        [str(ROOT / "scripts" / "find-python")], capture_output=True, text=True
    ).stdout.strip()
    try:
        if not PYTHON.exists():
            subprocess.run([base or "python3", "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", PIPECAT], check=True, timeout=900
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"installing {PIPECAT} into {BENCH_VENV} failed: {exc}"
    stamp.write_text(PIPECAT)
    return None


def versions() -> dict[str, str]:
    """The versions of Pipecat and of what it brings on its media and model path."""
    if not PYTHON.exists():
        return {}
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for p in ('pipecat-ai', 'aiortc', 'aws-sdk-bedrock-runtime', 'awscrt'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True)
    with contextlib.suppress(ValueError):
        result: dict[str, str] = json.loads(done.stdout)
        return result
    return {}


def settings() -> dict[str, Any]:
    """The bot's latency settings (``pipecat_bot.SETTINGS``), recorded with every result."""
    done = subprocess.run([str(PYTHON), str(BOT), "--settings"], capture_output=True, text=True)
    try:
        found: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {}
    return found


__all__ = [
    "BENCH_VENV",
    "BOT",
    "PIPECAT",
    "PYTHON",
    "RUNNER_BOT",
    "ensure_pipecat",
    "settings",
    "versions",
]
