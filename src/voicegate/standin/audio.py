"""Audio helpers for the stand-in's brains: level, a speech-like test signal, resampling.

Everything is 16-bit little-endian mono PCM, the format Nova Sonic carries in both directions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np

OUT_CHUNK_S: Final = 0.04


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples * samples)))


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


class LinearResampler:
    """Cheap streaming linear-interpolation resampler for s16le mono.

    Carries the previous chunk's last sample so chunk borders stay continuous (one input sample
    of delay). Good enough for an echo used in latency benchmarks; not for listening tests.
    """

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self._last = 0.0
        self._phase = 0.0  # output position carried across chunks, in input samples

    def process(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2")
        if self.src == self.dst or x.size == 0:
            return pcm
        step = self.src / self.dst
        xp = np.arange(-1, x.size, dtype=np.float64)
        fp = np.concatenate(([self._last], x.astype(np.float64)))
        # Output sample k sits at input position phase + k*step, delayed by one sample so that
        # position -1 (the previous chunk's last sample) is available; emit all k < size.
        count = max(0, math.ceil((x.size - self._phase) / step - 1e-9))
        pos = self._phase - 1 + step * np.arange(count, dtype=np.float64)
        y = np.interp(pos, xp, fp)
        self._phase = self._phase + step * count - x.size
        self._last = float(x[-1])
        return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()


def split_chunks(audio: bytes, rate: int) -> list[bytes]:
    step = 2 * int(rate * OUT_CHUNK_S)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


__all__ = ["LinearResampler", "rms", "split_chunks", "speech_like"]
