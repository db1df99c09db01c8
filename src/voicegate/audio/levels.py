"""Audio levels: the one place voicegate measures how loud 16-bit PCM is.

Every level decision (the echo brain's energy VAD, the stand-in's turn-taking, the continuation
buffer's "may hold speech", the RTP audio-level header, the test client's checks) goes through
these helpers, so a threshold written as an RMS or a dBFS value means the same thing everywhere.
numpy only (``av`` is only named for a type), so backends and the stand-in import it too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from voicegate.audio.pcm import Pcm, samples

if TYPE_CHECKING:
    import av

__all__ = ["FULL_SCALE", "SILENCE_DB", "audio_level_dbov", "dbfs", "frame_rms", "rms"]

FULL_SCALE: Final = 32768.0
SILENCE_DB: Final = -127.0
"""The floor every level in dB is clamped to (RFC 6465's -127 dBov means digital silence)."""


def rms(pcm: Pcm) -> float:
    """Root mean square of 16-bit samples, in sample units (0..32768); 0 for no samples."""
    x = samples(pcm)
    if x.size == 0:
        return 0.0
    f = x.astype(np.float64)
    return math.sqrt(float(np.dot(f, f)) / f.size)


def frame_rms(signal: npt.NDArray[Any], frame: int) -> npt.NDArray[np.float64]:
    """RMS of each ``frame`` samples of ``signal`` (its length a multiple of ``frame``), in the
    units of ``rms``: a level per frame for a whole signal at once."""
    x = signal.astype(np.float64).reshape(-1, frame)
    return np.asarray(np.sqrt((x**2).mean(axis=1)), dtype=np.float64)


def dbfs(pcm: Pcm) -> float:
    """Level in dB relative to full scale, clamped to -127 (digital silence)."""
    value = rms(pcm)
    return SILENCE_DB if value <= 0 else max(SILENCE_DB, 20.0 * math.log10(value / FULL_SCALE))


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """RFC 6465 audio level of an s16 frame, exactly as aiortc's ``compute_audio_level_dbov``
    computes it (its buffer, its divisor ``frame.samples`` even for stereo, its 32767 full
    scale), with numpy instead of a Python loop over the samples (aiortc: ~50-94 us per frame)."""
    x = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16).astype(np.float32)
    energy = float(np.dot(x, x))
    if energy <= 0 or frame.samples <= 0:
        return int(SILENCE_DB)
    level = math.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    return round(min(0.0, max(SILENCE_DB, 20 * math.log10(level))))
