"""Sample-rate conversion: the one place voicegate changes the rate of mono 16-bit audio.

Two engines, each chosen for what it guarantees:

- libswresample (through PyAV): a proper windowed-sinc filter with anti-aliasing, for
  everything a listener or a model hears. ``FrameResampler`` converts a stream of decoded
  frames (any rate, layout or sample format) and keeps its filter state between frames, so
  consecutive frames join without clicks; ``resample_pcm16`` converts one whole buffer (a
  synthesized sentence, a WAV file, an echoed turn) and flushes the filter's tail.
- ``LinearResampler``: streaming linear interpolation that turns every chunk into exactly its
  share of output samples with one input sample of delay. The stand-in's echo brain needs that
  (each audio chunk answered at once by exactly rate-ratio times its samples, as Nova does);
  libswresample holds back its filter delay and cannot promise a count per chunk.

``InboundResampler`` is the caller's side of a call: any decoded frame to the call's 16 kHz
(what the speaking detector and the recording take) and, when the backend takes another rate
(Bedrock's ``--model-input-rate`` 8 or 24 kHz), to that rate too, from the same frame (never
16 kHz resampled again); the time lost packets left in the timeline is filled with silence.
``PcmResampler`` streams raw PCM chunks to another rate (a brain that takes 16 kHz fed 8 or
24 kHz by a client).

numpy; PyAV imported only when a libswresample engine is built, so backends and the stand-in
import it without the media path.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from voicegate.audio.pcm import Int16Array
from voicegate.sonic.events import INPUT_SAMPLE_RATE

if TYPE_CHECKING:
    import av

__all__ = [
    "FrameResampler",
    "InboundResampler",
    "LinearResampler",
    "PcmResampler",
    "resample_pcm16",
]


def _swr(rate: int) -> Any:
    import av

    return av.AudioResampler(format="s16", layout="mono", rate=rate)


def _samples(frames: list[av.AudioFrame]) -> Int16Array:
    parts = [f.to_ndarray().reshape(-1).astype(np.int16, copy=False) for f in frames]
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class FrameResampler:
    """Decoded audio frames (any rate/layout/format) -> mono s16 samples at ``rate``.

    One per stream: libswresample keeps filter state between frames. Output lags input by the
    filter delay (a millisecond or so), so the first frames may yield fewer samples."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._swr = _swr(rate)

    def process(self, frame: av.AudioFrame) -> Int16Array:
        """The samples that ``frame`` makes available (possibly none)."""
        return _samples(self._swr.resample(frame))


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """One whole buffer of mono s16 PCM at another rate (libswresample, tail flushed)."""
    if from_rate == to_rate or not pcm:
        return pcm
    import av

    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = from_rate
    swr = _swr(to_rate)
    out = _samples(swr.resample(frame) + swr.resample(None))
    return out.astype("<i2", copy=False).tobytes()


class InboundResampler:
    """Decoded WebRTC audio (any rate/layout, s16) -> 16 kHz mono s16 samples, and the same
    audio at ``model_rate`` when the model takes another rate (``split``).

    One per call: the underlying resamplers keep filter state between frames, so consecutive
    frames join without clicks. Gaps in the RTP timeline (lost packets the jitter buffer skipped)
    are filled with silence so the model never sees time jump.
    """

    def __init__(self, rate: int = INPUT_SAMPLE_RATE, model_rate: int | None = None) -> None:
        self.rate = rate
        self.model_rate = rate if model_rate is None else model_rate
        self._resampler = FrameResampler(rate)
        self._model = None if self.model_rate == rate else FrameResampler(self.model_rate)
        self._next_pts: int | None = None
        self._in_rate = 0
        self.gap_samples = 0
        """Silence filled in, at ``rate``."""

    def _gap(self, frame: av.AudioFrame) -> int:
        """Input samples (at the frame's rate) lost before ``frame``; 0 for none or a reset."""
        gap = 0
        pts = frame.pts
        if pts is not None and self._next_pts is not None and frame.sample_rate == self._in_rate:
            gap = pts - self._next_pts
            # Fill gaps up to 2 s; a larger jump is a timeline reset, not lost audio.
            if not 0 < gap <= 2 * frame.sample_rate:
                gap = 0
        if pts is not None:
            self._next_pts = pts + frame.samples
            self._in_rate = frame.sample_rate
        return gap

    def process(self, frame: av.AudioFrame) -> Int16Array:
        """``frame`` at ``rate`` (the model's too when it takes that rate)."""
        return self.split(frame)[0]

    def split(self, frame: av.AudioFrame) -> tuple[Int16Array, Int16Array]:
        """``frame`` at ``rate`` and at ``model_rate`` (the same array when they are equal)."""
        gap = self._gap(frame)
        ours = self._convert(frame, gap, self.rate, self._resampler)
        if self._model is None:
            return ours, ours
        return ours, self._convert(frame, gap, self.model_rate, self._model)

    def _convert(
        self, frame: av.AudioFrame, gap: int, rate: int, resampler: FrameResampler
    ) -> Int16Array:
        parts: list[Int16Array] = []
        if gap:
            fill = gap * rate // frame.sample_rate
            if rate == self.rate:
                self.gap_samples += fill
            parts.append(np.zeros(fill, dtype=np.int16))
        if (
            frame.sample_rate == rate
            and frame.format.name == "s16"
            and len(frame.layout.channels) == 1
        ):
            # Already at this rate (voicegate's receive path decodes straight to 16 kHz mono):
            # no resampler pass, just a view of the samples.
            parts.append(np.frombuffer(memoryview(frame.planes[0]), np.int16)[: frame.samples])
        else:
            parts.append(resampler.process(frame))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class PcmResampler:
    """A stream of mono s16 PCM chunks from ``src`` to ``dst`` Hz (libswresample, its filter
    state kept between chunks). Output lags input by the filter delay."""

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self._swr = _swr(dst) if src != dst else None

    def process(self, pcm: bytes) -> bytes:
        if self._swr is None or not pcm:
            return pcm
        import av

        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.src
        return _samples(self._swr.resample(frame)).astype("<i2", copy=False).tobytes()


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
