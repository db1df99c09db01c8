"""What a load-test caller says, and how it recognises the answer.

Two signals, both built from espeak-ng speech (a synthetic vowel-like sound where espeak-ng is
missing):

- **markers**: speech with a 2.5 kHz marker tone (80 ms, -6 dBFS) once per ``MARKER_PERIOD``,
  each starting exactly on a 20 ms frame boundary, with a 400 ms pause every 2 s as a caller makes
  between phrases. 2.5 kHz survives every hop (16 kHz model input, 24 kHz model output, Opus at
  32 kbit/s) and speech has little steady energy there. ``Detector`` finds the tones in what
  comes back: a 5 ms block is "tone" when the Goertzel power at the marker frequency holds most of
  the block's energy and the level is high; a marker's time is that of the first tone block after
  a quiet stretch.
- **turns**: phrases separated by long silences, so that a brain that answers each turn once, after
  it ends, has room to do so. ``Activity`` finds where the answer starts: the first received frame
  whose level is above ``VOICE_RMS``.
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

from voicegate.audio.levels import frame_rms, rms
from voicegate.audio.resample import resample_pcm16

__all__ = [
    "Activity",
    "BLOCK_S",
    "Detector",
    "FRAME_S",
    "MARKER_AMPLITUDE",
    "MARKER_HZ",
    "MARKER_PERIOD",
    "MARKER_S",
    "PAUSE_S",
    "PHRASE_S",
    "SPEECH_PEAK",
    "TEXT",
    "TURN_RMS",
    "VOICE_RMS",
    "percentiles",
    "speech",
    "turns",
    "with_markers",
]

MARKER_HZ: Final = 2500.0
MARKER_S: Final = 0.08
MARKER_PERIOD: Final = 1.0
MARKER_AMPLITUDE: Final = 16000
SPEECH_PEAK: Final = 6000
BLOCK_S: Final = 0.005
PHRASE_S: Final = 2.0
PAUSE_S: Final = 0.4
FRAME_S: Final = 0.02
TURN_RMS: Final = 300.0
"""A 20 ms frame at or above this RMS (about -40 dBFS) is speech, for a turn's start and end."""
VOICE_RMS: Final = 100.0
"""Level (16-bit RMS, about -50 dBFS) above which a received frame holds the answer. The speech
the callers send peaks at SPEECH_PEAK; Opus turns digital silence into silence."""
TEXT: Final = (
    "The quick brown fox jumps over the lazy dog. Voice gateways should answer quickly, "
    "and every millisecond on the way there and back counts. One two three four five."
)


def _espeak(rate: int, text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(path), text], check=True)
        with wave.open(str(path), "rb") as w:
            src = w.getframerate()
            raw = w.readframes(w.getnframes())
    data = np.frombuffer(resample_pcm16(raw, src, rate), dtype=np.int16).astype(np.float64)
    return data / max(1.0, float(np.abs(data).max())) * SPEECH_PEAK


def speech(rate: int, seconds: float, pauses: bool = True) -> np.ndarray:
    """Speech (repeated to ``seconds``) at ``rate``, peak ~SPEECH_PEAK; with ``pauses``, 400 ms
    of silence every 2 s, as between phrases in conversation."""
    n = int(rate * seconds)
    data = _espeak(rate, TEXT)
    if data is None:
        t = np.arange(n) / rate
        sig = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        out = sig * SPEECH_PEAK
    else:
        reps = math.ceil(n / max(1, len(data)))
        out = np.tile(data, reps)[:n]
    if pauses:
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


def turns(
    rate: int, count: int, speech_s: float, gap_s: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``count`` phrases of about ``speech_s`` seconds, each followed by ``gap_s`` of silence.
    Returns the signal and, per turn, the first sample of its first voiced 20 ms frame and the
    last sample of its last one (voiced: RMS at or above ``TURN_RMS``, the level at which the
    stand-in's turns brain counts a chunk as speech)."""
    frame = int(rate * FRAME_S)
    phrase = speech(rate, speech_s, pauses=False).astype(np.float64)
    phrase = np.concatenate([phrase, np.zeros(-len(phrase) % frame)])
    level = frame_rms(phrase, frame)
    voiced = np.flatnonzero(level >= TURN_RMS)
    first = int(voiced[0]) if voiced.size else 0
    # The turn ends with a clearly voiced frame (twice the threshold, so that no codec on the
    # way makes a brain hear it as quiet) followed by digital silence: caller and brain agree
    # on the frame where speech ended.
    loud = np.flatnonzero(level >= 2 * TURN_RMS)
    last = int(loud[-1]) if loud.size else len(level) - 1
    fade = int(0.002 * rate)
    end = (last + 1) * frame
    phrase[end - fade : end] *= np.linspace(1.0, 0.0, fade)
    phrase[end:] = 0
    lead = frame * 5  # 100 ms of silence before each phrase
    seg = math.ceil((lead + len(phrase) + int(gap_s * rate)) / frame) * frame
    out = np.zeros(seg * count, dtype=np.float64)
    bounds: list[tuple[int, int]] = []
    for i in range(count):
        at = i * seg + lead  # a frame boundary: frames of the phrase are frames of the signal
        out[at : at + len(phrase)] = phrase
        bounds.append((at + first * frame, at + (last + 1) * frame - 1))
    return out.astype(np.int16), bounds


@dataclass
class Detector:
    """Streaming marker detector over mono int16 blocks at ``rate``."""

    rate: int
    on_marker: list[float] = field(default_factory=list)
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _quiet: int = 99
    _block: int = 0

    def __post_init__(self) -> None:
        self._block = int(self.rate * BLOCK_S)
        k = np.arange(self._block)
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


@dataclass
class Activity:
    """Arrival times of received frames that carry sound (level above ``VOICE_RMS``)."""

    voiced: list[float] = field(default_factory=list)

    def push(self, pcm: np.ndarray, arrived: float) -> None:
        if rms(pcm) > VOICE_RMS:
            self.voiced.append(arrived)


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
