"""The benchmark signal: speech with short marker tones, and a detector for those tones.

Each marker is a 2.5 kHz tone burst (80 ms, -6 dBFS) starting exactly on a 20 ms frame
boundary, once per ``MARKER_PERIOD`` seconds, on top of espeak-ng speech at a lower level, with
a 400 ms pause every 2 s as a caller makes between phrases. 2.5 kHz
survives every hop (16 kHz model input, 24 kHz model output, Opus at 32 kbit/s) and speech has
little steady energy there. The detector looks at 5 ms blocks: a block is "tone" when the
Goertzel power at the marker frequency holds most of the block's energy and the level is high.
A marker's time is that of the first tone block after a quiet stretch.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from voicegate.media.resample import resample_pcm16

MARKER_HZ: Final = 2500.0
MARKER_S: Final = 0.08
MARKER_PERIOD: Final = 1.0
MARKER_AMPLITUDE: Final = 16000
SPEECH_PEAK: Final = 6000
BLOCK_S: Final = 0.005
PHRASE_S: Final = 2.0
PAUSE_S: Final = 0.4
FRAME_S: Final = 0.02


def speech(rate: int, seconds: float) -> np.ndarray:
    """espeak-ng speech (repeated to ``seconds``) at ``rate``, peak ~SPEECH_PEAK; a synthetic
    vowel-like signal when espeak-ng is missing."""
    n = int(rate * seconds)
    exe = shutil.which("espeak-ng")
    if exe is None:
        t = np.arange(n) / rate
        sig = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        return (sig * SPEECH_PEAK).astype(np.int16)
    text = (
        "The quick brown fox jumps over the lazy dog. Voice gateways should answer quickly, "
        "and every millisecond on the way there and back counts. One two three four five."
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(path), text], check=True)
        with wave.open(str(path), "rb") as w:
            src = w.getframerate()
            raw = w.readframes(w.getnframes())
    data = np.frombuffer(resample_pcm16(raw, src, rate), dtype=np.int16).astype(np.float64)
    data = data / max(1.0, float(np.abs(data).max())) * SPEECH_PEAK
    reps = math.ceil(n / max(1, len(data)))
    out = np.tile(data, reps)[:n]
    # A caller breathes: 400 ms of silence every 2 s, as between phrases in conversation.
    period, pause = int(PHRASE_S * rate), int(PAUSE_S * rate)
    for start in range(period - pause, n, period):
        out[start : start + pause] = 0
    return out.astype(np.int16)


def with_markers(base: np.ndarray, rate: int, first: float = 0.5) -> tuple[np.ndarray, list[int]]:
    """``base`` with marker tones mixed in; returns the signal and each marker's start sample.
    Speech is ducked under each marker so that the tone dominates its blocks."""
    out = base.astype(np.float64).copy()
    frame = int(rate * FRAME_S)
    starts: list[int] = []
    t = np.arange(int(rate * MARKER_S)) / rate
    tone = MARKER_AMPLITUDE * np.sin(2 * np.pi * MARKER_HZ * t)
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.002)  # 2 ms fades, no clicks
    pos = int(first * rate) // frame * frame
    period = int(MARKER_PERIOD * rate) // frame * frame
    while pos + len(tone) + frame < len(out):
        guard = int(0.04 * rate)
        out[max(0, pos - guard) : pos + len(tone) + guard] *= 0.1
        out[pos : pos + len(tone)] += tone * ramp
        starts.append(pos)
        pos += period
    return np.clip(out, -32768, 32767).astype(np.int16), starts


@dataclass
class Detector:
    """Streaming marker detector over mono int16 blocks at ``rate``."""

    rate: int
    on_marker: list[float] = field(default_factory=list)
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _quiet: int = 99
    _coeff: float = 0.0
    _block: int = 0

    def __post_init__(self) -> None:
        self._block = int(self.rate * BLOCK_S)
        n = self._block
        k = np.arange(n)
        self._cos = np.cos(2 * np.pi * MARKER_HZ * k / self.rate).astype(np.float32)
        self._sin = np.sin(2 * np.pi * MARKER_HZ * k / self.rate).astype(np.float32)

    def push(self, pcm: np.ndarray, arrived: float) -> None:
        """Feed samples that became available at ``arrived`` (all of them at once)."""
        buf = np.concatenate([self._buf, pcm.astype(np.float32)])
        n = self._block
        blocks = len(buf) // n
        if blocks:
            b = buf[: blocks * n].reshape(blocks, n)
            energy = (b * b).sum(axis=1)
            re = b @ self._cos
            im = b @ self._sin
            tone = 2 * (re * re + im * im) / n  # power of the marker bin (same units)
            level = np.sqrt(energy / n)
            for i in range(blocks):
                is_tone = level[i] > 2500 and tone[i] > 0.6 * energy[i]
                if is_tone and self._quiet >= 20:
                    self.on_marker.append(arrived)
                self._quiet = 0 if is_tone else self._quiet + 1
        self._buf = buf[blocks * n :]


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "mean": round(float(a.mean()), 1),
        "max": round(float(a.max()), 1),
    }
