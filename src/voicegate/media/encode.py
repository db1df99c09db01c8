"""The outbound audio path of a patched ``RTCRtpSender``: voicegate's Opus encoder.

aiortc's ``OpusEncoder`` is fixed at 96 kbit/s stereo, complexity 10, and runs in the default
thread pool (aiortc#1155). ``SpeechEncoder`` encodes inline with a mono libopus encoder at the
track's own rate, configured for speech (``OutboundOpus``), and takes the RTP timestamp straight
from the frame's pts (no resampler delay, no drift). ``patch.apply()`` installs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
import numpy as np

from voicegate.audio.resample import FrameResampler
from voicegate.media import opus
from voicegate.media.opus import RTP_RATE

__all__ = ["OutboundOpus", "SILENT_FRAMES_BEFORE_REUSE", "SpeechEncoder"]

SILENT_FRAMES_BEFORE_REUSE: Final = 3


@dataclass(frozen=True, slots=True)
class OutboundOpus:
    """How outbound speech is encoded. Defaults chosen by measurement (benchmarks/micro.py):
    CELT-only ("restricted low delay") at 32 kbit/s mono costs ~45 us per 20 ms frame against
    ~130 us for SILK/hybrid ("voip") and ~170 us with in-band FEC, and its 2.5 ms look-ahead
    is 4 ms shorter. In-band FEC exists only in SILK/hybrid, so it is off by default; the
    browser conceals a lost frame itself (one frame, NetEq)."""

    bitrate: int = 32000
    complexity: int = 5
    application: str = "lowdelay"  # "lowdelay" (CELT), "voip" (SILK/hybrid), "audio"
    fec: bool = False
    loss_percent: int = 0
    dtx: bool = False
    reuse_silence: bool = True
    """After a few all-zero frames, resend the last silence packet instead of encoding again
    (the encoder's state is that of silence already): a listening bot costs almost nothing."""

    def application_id(self) -> int:
        return {"lowdelay": 2051, "voip": opus.APPLICATION_VOIP, "audio": opus.APPLICATION_AUDIO}[
            self.application
        ]


class SpeechEncoder:
    """aiortc ``Encoder`` for opus: mono libopus at the frame's own rate, inline, with RTP
    timestamps taken from the frames' pts. Frames of 20 ms (what PlayoutTrack returns) map to
    one packet each; other sizes are re-framed (20/40/60 ms packets, one per call)."""

    def __init__(self, settings: OutboundOpus) -> None:
        self.settings = settings
        self._encoder: opus.Encoder | None = None
        self._resampler: FrameResampler | None = None
        self._buf = b""
        self._buf_ts = 0  # 48 kHz timestamp of _buf's first sample
        self._origin: int | None = None
        self._silent_run = 0
        self._silence_packet = b""
        self.frames_encoded = 0
        self.frames_reused = 0

    def _encoder_for(self, rate: int) -> opus.Encoder:
        enc = self._encoder
        if enc is None or enc.rate != rate:
            s = self.settings
            enc = self._encoder = opus.Encoder(
                rate,
                bitrate=s.bitrate,
                complexity=s.complexity,
                fec=s.fec,
                loss_percent=s.loss_percent,
                dtx=s.dtx,
                application=s.application_id(),
            )
            self._buf = b""
        return enc

    def _mono(self, frame: av.AudioFrame) -> tuple[bytes, int]:
        if frame.format.name != "s16":
            raise ValueError(f"outbound audio must be s16, not {frame.format.name}")
        rate = frame.sample_rate
        if rate not in opus.RATES:
            if self._resampler is None:
                self._resampler = FrameResampler(RTP_RATE)
            return self._resampler.process(frame).tobytes(), RTP_RATE
        channels = len(frame.layout.channels)
        raw = bytes(frame.planes[0])[: frame.samples * channels * 2]
        if channels == 1:
            return raw, rate
        stereo = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)
        return stereo.mean(axis=1).astype(np.int16).tobytes(), rate

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int | None]:
        pcm, rate = self._mono(frame)
        enc = self._encoder_for(rate)
        if not self._buf and frame.pts is not None and frame.time_base is not None:
            self._buf_ts = int(frame.pts * frame.time_base * RTP_RATE)
        self._buf += pcm
        have = len(self._buf) // 2
        per_ms = rate // 1000
        for ms in (60, 40, 20):
            if have >= ms * per_ms:
                take = ms * per_ms
                break
        else:
            return [], None
        chunk, self._buf = self._buf[: take * 2], self._buf[take * 2 :]
        ts = self._buf_ts
        self._buf_ts += take * RTP_RATE // rate
        if self._origin is None:
            self._origin = ts
        return [self._encode(enc, chunk, ms)], (ts - self._origin) & 0xFFFFFFFF

    def _encode(self, enc: opus.Encoder, chunk: bytes, ms: int) -> bytes:
        if self.settings.reuse_silence and ms == 20 and not np.frombuffer(chunk, np.int16).any():
            self._silent_run += 1
            if self._silent_run > SILENT_FRAMES_BEFORE_REUSE and self._silence_packet:
                self.frames_reused += 1
                return self._silence_packet
            packet = enc.encode(chunk)
            self._silence_packet = packet
            self.frames_encoded += 1
            return packet
        self._silent_run = 0
        self.frames_encoded += 1
        return enc.encode(chunk)

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        """Pre-encoded packets (the benchmark's load client sends them): aiortc's conversion."""
        from aiortc.mediastreams import convert_timebase

        ts = convert_timebase(packet.pts or 0, packet.time_base, Fraction(1, RTP_RATE))
        return [bytes(packet)], ts
