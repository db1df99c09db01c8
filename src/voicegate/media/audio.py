"""Audio plumbing on the hot path between the media tracks and the conversation.

Caller audio to model input (``InboundResampler``: any frame -> 16 kHz mono, lost time filled
with silence; ``Chunker``: fixed-size model chunks) and raw PCM to frames (``pcm_frame``). Pure
functions and small stateful classes, no I/O, so they are unit-tested and measured on their own.
Everything here runs once per 20 ms frame per call, so it avoids per-sample Python loops. Rate
conversion itself is ``resample``'s, level metering ``levels``'.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from voicegate.media.resample import FrameResampler

MODEL_INPUT_RATE: Final = 16000
CHUNK_SAMPLES: Final = 320
"""Default samples per chunk sent to the model: 20 ms at 16 kHz, i.e. every received frame goes
to the model the moment it is decoded. Larger chunks cost fewer model events per second (each
costs ~0.3-0.6 ms of CPU on the Bedrock path) but add up to their length on the way in;
``configure_chunks`` (``--model-chunk-ms``) chooses. See benchmarks/README.md."""
_chunk_samples = CHUNK_SAMPLES


def model_chunk_seconds() -> float:
    """Length of the caller-audio chunks the inbound pump hands the conversation."""
    return _chunk_samples / MODEL_INPUT_RATE


def configure_chunks(ms: int) -> None:
    """Model input chunk length for every call from now on (a multiple of 20 ms)."""
    global _chunk_samples
    if ms <= 0 or ms % 20:
        raise ValueError(f"chunk length {ms} ms must be a positive multiple of 20 ms")
    _chunk_samples = MODEL_INPUT_RATE * ms // 1000


Int16Array = npt.NDArray[np.int16]


class InboundResampler:
    """Decoded WebRTC audio (any rate/layout, s16) -> 16 kHz mono s16 samples.

    One per call: the underlying resampler keeps filter state between frames, so consecutive
    frames join without clicks. Gaps in the RTP timeline (lost packets the jitter buffer skipped)
    are filled with silence so the model never sees time jump.
    """

    def __init__(self, rate: int = MODEL_INPUT_RATE) -> None:
        self.rate = rate
        self._resampler = FrameResampler(rate)
        self._next_pts: int | None = None
        self._in_rate = 0
        self.gap_samples = 0

    def process(self, frame: av.AudioFrame) -> Int16Array:
        parts: list[Int16Array] = []
        pts = frame.pts
        if pts is not None and self._next_pts is not None and frame.sample_rate == self._in_rate:
            gap = pts - self._next_pts
            # Fill gaps up to 2 s; a larger jump is a timeline reset, not lost audio.
            if 0 < gap <= 2 * frame.sample_rate:
                fill = gap * self.rate // frame.sample_rate
                self.gap_samples += fill
                parts.append(np.zeros(fill, dtype=np.int16))
        if pts is not None:
            self._next_pts = pts + frame.samples
            self._in_rate = frame.sample_rate
        if (
            frame.sample_rate == self.rate
            and frame.format.name == "s16"
            and len(frame.layout.channels) == 1
        ):
            # Already what the model takes (voicegate's receive path decodes straight to 16 kHz
            # mono): no resampler pass, just a view of the samples.
            parts.append(np.frombuffer(memoryview(frame.planes[0]), np.int16)[: frame.samples])
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        parts.append(self._resampler.process(frame))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Chunker:
    """Re-frames a stream of samples into fixed-size chunks (bytes), keeping the remainder."""

    def __init__(self, samples: int | None = None) -> None:
        samples = _chunk_samples if samples is None else samples
        self.samples = samples
        self._nbytes = samples * 2
        self._buf = bytearray()

    def push(self, pcm: Int16Array | bytes) -> list[bytes]:
        self._buf += pcm if isinstance(pcm, bytes) else pcm.tobytes()
        out: list[bytes] = []
        n = self._nbytes
        while len(self._buf) >= n:
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]
        return out

    @property
    def pending_samples(self) -> int:
        return len(self._buf) // 2


def pcm_frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    """A mono s16 AudioFrame over raw PCM bytes, with pts in samples (time base 1/rate)."""
    samples = len(pcm) // 2
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame
