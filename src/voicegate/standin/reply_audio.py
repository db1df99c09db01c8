"""What the stand-in's brains send as audio: a speech-like test signal, cut into reply chunks.

Levels and resampling are ``voicegate.audio``'s (one owner each); this module only makes up
the voice a scripted model "speaks" and paces it out in chunks of ``OUT_CHUNK_S``.

Everything is 16-bit little-endian mono PCM, the format Nova Sonic carries in both directions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np

OUT_CHUNK_S: Final = 0.04


@lru_cache(maxsize=8)
def speech_like(rate: int, seconds: float) -> bytes:
    """A voiced-sounding signal (harmonics of a gliding pitch, syllable envelope), s16le."""
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 - 0.5 * np.cos(2 * math.pi * 4.0 * t)  # ~4 syllables per second
    out = 0.25 * 32767 * wave * envelope / 1.5
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def split_chunks(audio: bytes, rate: int) -> list[bytes]:
    step = 2 * int(rate * OUT_CHUNK_S)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


__all__ = ["split_chunks", "speech_like"]
