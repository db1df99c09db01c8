"""Text to speech with hibari's bundled voice "heart" (24 kHz, the rate Nova Sonic speaks at).

Only "heart" is used: it is the one voice inside the wheel; hibari downloads every other voice
from a model hub on first use, which voicegate must never do. Its ONNX file is checked against the
digest in hibari's own voice registry at load.

Replies are synthesized a sentence at a time (10-25 ms each), so the first audio goes out long
before the last sentence is ready and a barge-in can stop the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from voicegate.audio.resample import resample_pcm16
from voicegate.backends.speech import SpeechModelError, missing_package, sha256_file

__all__ = [
    "LEAD_IN_MS",
    "MAX_TEXT_CHARS",
    "SAMPLE_RATE",
    "SILENT_SAMPLE",
    "Synthesizer",
    "VOICE",
    "float_to_pcm16",
    "trim_lead_in",
]

VOICE: Final = "heart"
SAMPLE_RATE: Final = 24000
MAX_TEXT_CHARS: Final = 1000
"""Replies are short; a bound keeps one synthesis call short too."""
LEAD_IN_MS: Final = 20
"""hibari starts every sentence with 260-300 ms of digital silence (measured on three replies:
zeros up to the first frame above -40 dBFS). Between sentences that is a natural pause; before a
reply's first sentence it is only waiting, heard by the caller on top of the turn's latency, so
the first sentence keeps just this much of it."""
SILENT_SAMPLE: Final = 32
"""A sample below this magnitude (-60 dBFS) counts as silence when trimming the lead-in."""


def trim_lead_in(pcm: bytes, rate: int, keep_ms: int = LEAD_IN_MS) -> bytes:
    """``pcm`` (s16le mono) without its leading silence, but for ``keep_ms`` before the sound."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    loud = np.flatnonzero(np.abs(samples) >= SILENT_SAMPLE)
    if loud.size == 0:
        return pcm
    start = max(0, int(loud[0]) - keep_ms * rate // 1000)
    return pcm[2 * start :]


def float_to_pcm16(audio: NDArray[np.float32]) -> bytes:
    """float32 in [-1, 1] -> 16-bit little-endian PCM bytes (clipped, not wrapped)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Synthesizer:
    """The loaded hibari voice. ``synthesize`` may run in several worker threads at once."""

    sample_rate = SAMPLE_RATE

    def __init__(self, *, threads: int = 1) -> None:
        try:
            import hibari
            from hibari import voices
        except ImportError as exc:
            raise missing_package("hibari-tts", exc) from exc
        entry: dict[str, Any] = voices.VOICES.get(VOICE, {})
        if not entry.get("bundled"):
            raise SpeechModelError(
                f"hibari-tts {hibari.__version__} does not bundle the voice {VOICE!r}; "
                "install the pinned release with pip install 'voicegate[local]'"
            )
        # download_missing=False: a bundled voice never needs the network; if the file is gone,
        # fail here rather than fetch it.
        try:
            path = Path(voices.voice_path(VOICE, download_missing=False))
        except FileNotFoundError as exc:
            raise SpeechModelError(f"the hibari voice file is missing ({exc})") from exc
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            raise SpeechModelError(
                f"the hibari voice {path} is missing or altered; reinstall it with "
                "pip install --force-reinstall 'voicegate[local]'"
            )
        self._tts: Any = hibari.Hibari(voice=VOICE, model=str(path), threads=threads)
        if int(self._tts.sample_rate) != SAMPLE_RATE:
            raise SpeechModelError(f"hibari speaks at {self._tts.sample_rate} Hz, not 24 kHz")

    def sentences(self, text: str) -> list[str]:
        """The reply split the way hibari splits it, so each piece can be spoken on its own."""
        return [str(s) for s in self._tts.split_sentences(text[:MAX_TEXT_CHARS])]

    def synthesize(self, sentence: str, rate: int = SAMPLE_RATE, *, first: bool = False) -> bytes:
        """One sentence as mono s16le PCM at ``rate``. Blocking (~10-25 ms). ``first``: the
        reply's first sentence, whose lead-in is trimmed (see :data:`LEAD_IN_MS`)."""
        parts = [np.asarray(p, np.float32) for p in self._tts.stream(sentence[:MAX_TEXT_CHARS])]
        if not parts:
            return b""
        pcm = resample_pcm16(float_to_pcm16(np.concatenate(parts)), SAMPLE_RATE, rate)
        return trim_lead_in(pcm, rate) if first else pcm

    def warm_up(self) -> None:
        """Build what hibari builds lazily (the G2P and its out-of-vocabulary network) now.

        Lazy building is not thread-safe and would land its cost on a caller's first turn.
        """
        _ = self._tts.g2p.oov
        self.synthesize("Ready.")
