"""The stand-in stays independent of the production client it is there to check."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import voicegate.standin

SRC = Path(__file__).resolve().parents[2] / "src"


def test_standin_never_imports_the_bedrock_backend() -> None:
    modules = [
        f"voicegate.standin.{m.name}" for m in pkgutil.iter_modules(voicegate.standin.__path__)
    ]
    assert "voicegate.standin.session" in modules and "voicegate.standin.h2" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('voicegate.backends.bedrock'))\n"
        "print(','.join(bad))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"the stand-in imported {out.stdout.strip()}"


def test_standin_sources_stay_small() -> None:
    package = Path(voicegate.standin.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert max(sizes.values()) <= 420, sizes
