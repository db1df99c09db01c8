"""Every change voicegate makes to aiortc's media path, in one place (pinned: aiortc==1.16.0).

aiortc is a fine signaling/transport stack, but its audio media path costs latency, loss
tolerance and CPU that a voice gateway cannot afford (measured in
shared/reference/aiortc-on-this-machine.md and benchmarks/). ``apply()`` replaces, process-wide
and once at start-up, exactly these pieces; each is tied to the upstream report it works around:

1. **Receive path** (aiortc#543 "Audio Jitter Buffer", closed as stale): aiortc's audio
   ``JitterBuffer(capacity=16, prefetch=4)`` holds every frame until four more have arrived
   (+80 ms one way), a single lost packet stalls it ~320 ms and leaves +200 ms for the rest of
   the call, and it has no concealment. ``AudioReceivePath`` takes its place for audio
   receivers: a packet that arrives in order is decoded and handed to the track at once; a gap
   waits at most an adaptive *reorder hold* (0 on a clean network, up to 3 frames once packets
   are seen arriving late) and is then filled by Opus in-band FEC from the next packet (when the
   sender includes it) or packet-loss concealment, one concealed frame per lost packet. Time is
   never skipped: pts stay continuous, so latency returns to its floor right after a loss.
2. **Decoder thread** (aiortc#505/#744, CPU: one ``threading.Thread`` per receiver and a
   ``run_coroutine_threadsafe`` hand-off per frame cost more than the decode): audio is decoded
   inline on the event loop with a direct libopus decoder (``voicegate.opus``), straight to
   the rate voicegate wants (16 kHz mono for the model: no resampler at all).
3. **Encoder** (aiortc's ``OpusEncoder`` is fixed at 96 kbit/s stereo, complexity 10, and runs
   in the default thread pool, aiortc#1155): outbound audio is encoded inline with a mono
   libopus encoder at the track's own rate, configured for speech (``OutboundOpus``), and the
   RTP timestamp comes straight from the frame's pts (no resampler delay, no drift).
4. **Audio level** (``rtp.compute_audio_level_dbov`` is a pure-Python loop over every sample,
   ~50-94 us per frame): the same RFC 6465 formula with numpy.
5. **SDP**: opus is announced with ``useinbandfec=1`` so browsers send the FEC that (1) uses.

Everything here touches aiortc privates (name-mangled attributes); ``apply()`` checks the pinned
version and refuses anything else, and tests/test_rtcpatch.py exercises each piece on a real
pair of peers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, cast

import aiortc
import av
import numpy as np
import structlog
from aiortc import rtp as aiortc_rtp
from aiortc.codecs import CODECS, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender

from voicegate.media import opus

log = structlog.get_logger(__name__)

AIORTC_VERSION: Final = "1.16.0"
RTP_RATE: Final = 48000  # Opus RTP clock, whatever the audio's rate
HOLD_MAX: Final = 0.060
HOLD_STEP: Final = 0.020
HOLD_DECAY_AFTER: Final = 5.0
"""Seconds without a late packet after which the reorder hold shrinks by one step."""
MAX_PENDING: Final = 8
"""Packets held behind a gap; more than that and the gap is concealed at once."""
MAX_CONCEAL_FRAMES: Final = 10
"""A longer gap is concealed for its last 200 ms only; the rest becomes silence downstream
(the pts jump is filled by ``audio.InboundResampler``), as PLC fades to silence anyway."""
RESET_GAP: Final = 3000
"""A sequence jump beyond this (60 s) is a new stream, not loss."""
MAX_QUEUED_FRAMES: Final = 250
"""aiortc's track queue is unbounded; beyond 5 s unread, the oldest frames are dropped."""
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


@dataclass(slots=True)
class MediaSettings:
    decode_rate: int = 16000
    """Rate of the mono frames inbound audio tracks yield (16 kHz: what the model takes)."""
    outbound: OutboundOpus = field(default_factory=OutboundOpus)


_settings = MediaSettings()
_applied = False
_originals: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------
# audio level (4)
# --------------------------------------------------------------------------------------------


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """RFC 6465 audio level of an s16 frame, as aiortc's ``compute_audio_level_dbov`` computes
    it (same buffer, same formula), without a Python loop over the samples."""
    samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16)
    x = samples.astype(np.float32)
    energy = float(np.dot(x, x))
    if energy <= 0 or frame.samples <= 0:
        return -127
    rms = math.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    return round(min(0.0, max(-127.0, 20 * math.log10(rms))))


# --------------------------------------------------------------------------------------------
# receive path (1, 2)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReceiveStats:
    packets: int = 0
    decoded: int = 0
    concealed: int = 0
    """Frames made up by packet-loss concealment."""
    recovered: int = 0
    """Lost frames decoded from the next packet's in-band FEC."""
    late: int = 0
    """Packets that arrived after their frame had been concealed (dropped)."""
    duplicates: int = 0
    dropped_unread: int = 0
    resets: int = 0
    skipped_samples: int = 0
    """Samples of a very long gap left to the consumer's silence fill (48 kHz units)."""


def _frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


def _seq_diff(a: int, b: int) -> int:
    """a - b for 16-bit RTP sequence numbers, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


class AudioReceivePath:
    """Stands in for aiortc's audio ``JitterBuffer`` inside one ``RTCRtpReceiver``: it decodes
    and delivers frames itself, so ``add()`` always answers "no frame" to the receiver (which
    then has nothing to queue for the decoder thread it no longer starts)."""

    def __init__(self, receiver: RTCRtpReceiver, rate: int) -> None:
        self._receiver = receiver
        self.rate = rate
        self.stats = ReceiveStats()
        self.hold = 0.0
        self._decoder: opus.Decoder | None = None
        self._other: Any = None
        self._other_name = ""
        self._next_seq: int | None = None
        self._base_ts = 0
        self._next_ts = 0  # RTP timestamp (48 kHz, relative to _base_ts) of the next frame
        self._frame48 = 960
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_late = 0.0
        self._closed = False

    # aiortc's JitterBuffer interface -----------------------------------------------------

    @property
    def capacity(self) -> int:
        return MAX_PENDING

    def add(self, packet: aiortc_rtp.RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._closed:
            return False, None
        codecs: dict[int, Any] = self._receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        codec = codecs.get(packet.payload_type)
        data: bytes = getattr(packet, "_data", packet.payload)
        if codec is not None and codec.mimeType.lower() == "audio/opus":
            self._on_opus(packet.sequence_number, packet.timestamp, data)
        elif codec is not None:
            self._on_other(codec, packet.timestamp, data)
        return False, None

    # opus ----------------------------------------------------------------------------------

    def _on_opus(self, seq: int, timestamp: int, data: bytes) -> None:
        self.stats.packets += 1
        if self._decoder is None:
            self._decoder = opus.Decoder(self.rate)
        if self._next_seq is None:
            self._next_seq = seq
            self._base_ts = timestamp
            self._next_ts = 0
        d = _seq_diff(seq, self._next_seq)
        rel_ts = (timestamp - self._base_ts) & 0xFFFFFFFF
        if d < 0:
            if -d > RESET_GAP:
                self._reset(seq, timestamp)
                d, rel_ts = 0, 0
            else:
                # Too late: its frame was concealed already. Reordering is happening, so hold
                # gaps a little longer from now on.
                self.stats.late += 1
                self._last_late = self._now()
                self.hold = min(HOLD_MAX, self.hold + HOLD_STEP)
                return
        elif d > RESET_GAP:
            self._reset(seq, timestamp)
            d, rel_ts = 0, 0
        if d == 0:
            self._deliver(rel_ts, data)
            self._drain()
        else:
            if seq in self._pending:
                self.stats.duplicates += 1
                return
            self._pending[seq] = (rel_ts, data)
            self._maybe_decay()
            if self.hold <= 0 or len(self._pending) > MAX_PENDING:
                self._conceal_gap()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.hold, self._on_timer)

    def _drain(self) -> None:
        """Deliver held packets that are now in order; keep (and time) the rest."""
        while self._pending:
            assert self._next_seq is not None
            item = self._pending.pop(self._next_seq, None)
            if item is None:
                break
            self._deliver(*item)
        if not self._pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._conceal_gap()

    def _conceal_gap(self) -> None:
        """The missing frames before the first held packet: FEC for the last, PLC for the rest."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._next_seq is None or self._decoder is None:
            return
        origin = self._next_seq
        first = min(self._pending, key=lambda k: _seq_diff(k, origin))
        missing = _seq_diff(first, origin)
        first_ts, first_data = self._pending[first]
        span = (first_ts - self._next_ts) & 0xFFFFFFFF
        per = span // missing if missing > 0 and span % missing == 0 else self._frame48
        per = max(120, min(per, 5760))  # 2.5..120 ms
        skip = max(0, missing - MAX_CONCEAL_FRAMES)
        if skip:
            self.stats.skipped_samples += skip * per
            self._next_ts = (self._next_ts + skip * per) & 0xFFFFFFFF
        for i in range(skip, missing):
            samples = per * self.rate // RTP_RATE
            if i == missing - 1:
                pcm = self._decoder.recover(first_data, samples)
                self.stats.recovered += 1
            else:
                pcm = self._decoder.conceal(samples)
                self.stats.concealed += 1
            self._push(pcm, self._next_ts)
            self._next_ts = (self._next_ts + per) & 0xFFFFFFFF
        self._next_seq = first
        self._drain()
        if self._pending:
            if self.hold <= 0:
                self._conceal_gap()
            else:
                self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.hold, self._on_timer)

    def _deliver(self, rel_ts: int, data: bytes) -> None:
        assert self._decoder is not None and self._next_seq is not None
        try:
            if not data:  # an empty payload would make libopus conceal its 120 ms maximum
                raise opus.OpusError("empty packet")
            pcm = self._decoder.decode(data)
        except opus.OpusError:
            # A corrupt packet: conceal its frame instead, so time keeps flowing.
            pcm = self._decoder.conceal(self._frame48 * self.rate // RTP_RATE)
            self.stats.concealed += 1
        else:
            self.stats.decoded += 1
            if pcm:
                self._frame48 = len(pcm) // 2 * RTP_RATE // self.rate
        self._push(pcm, rel_ts)
        self._next_seq = (self._next_seq + 1) & 0xFFFF
        self._next_ts = (rel_ts + self._frame48) & 0xFFFFFFFF

    def _reset(self, seq: int, timestamp: int) -> None:
        self.stats.resets += 1
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._next_seq = seq
        self._base_ts = timestamp
        self._next_ts = 0

    def _maybe_decay(self) -> None:
        if self.hold > 0 and self._now() - self._last_late > HOLD_DECAY_AFTER:
            self.hold = max(0.0, self.hold - HOLD_STEP)
            self._last_late = self._now()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # other codecs (G.711/G.722: no loss handling, decoded inline) ---------------------------

    def _on_other(self, codec: Any, timestamp: int, data: bytes) -> None:
        self.stats.packets += 1
        if self._other is None or self._other_name != codec.name:
            self._other = get_decoder(codec)
            self._other_name = codec.name
        for frame in self._other.decode(JitterFrame(data=data, timestamp=timestamp)):
            self.stats.decoded += 1
            self._enqueue(frame)

    # delivery ------------------------------------------------------------------------------

    def _push(self, pcm: bytes, rel_ts: int) -> None:
        if pcm:
            self._enqueue(_frame(pcm, self.rate, rel_ts * self.rate // RTP_RATE))

    def _enqueue(self, frame: av.AudioFrame | None) -> None:
        track = self._receiver._track
        if track is None:
            return
        queue: asyncio.Queue[av.AudioFrame | None] = track._queue
        while queue.qsize() >= MAX_QUEUED_FRAMES:
            queue.get_nowait()
            self.stats.dropped_unread += 1
        queue.put_nowait(frame)

    def close(self) -> None:
        """The receiver stopped: end the track (what aiortc's decoder thread did on exit)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._enqueue(None)


def receive_path(receiver: RTCRtpReceiver) -> AudioReceivePath | None:
    """The patched receive path of an audio receiver (None for video or when not applied)."""
    path = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return path if isinstance(path, AudioReceivePath) else None


def _receiver_init(self: RTCRtpReceiver, kind: str, transport: Any) -> None:
    _originals["receiver_init"](self, kind, transport)
    if kind == "audio":
        self._RTCRtpReceiver__jitter_buffer = AudioReceivePath(self, _settings.decode_rate)  # type: ignore[attr-defined]


async def _receiver_receive(self: RTCRtpReceiver, parameters: Any) -> None:
    """aiortc's ``receive`` without the decoder thread for audio (decoding is inline)."""
    if receive_path(self) is None:
        await _originals["receiver_receive"](self, parameters)
        return
    if self._RTCRtpReceiver__started:  # type: ignore[attr-defined]
        return
    codecs = self._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    for codec in parameters.codecs:
        codecs[codec.payloadType] = codec
    rtx = self._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
    for encoding in parameters.encodings:
        if encoding.rtx:
            rtx[encoding.rtx.ssrc] = encoding.ssrc
    self._RTCRtpReceiver__transport._register_rtp_receiver(self, parameters)  # type: ignore[attr-defined]
    self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())  # type: ignore[attr-defined]
    self._RTCRtpReceiver__started = True  # type: ignore[attr-defined]


def _receiver_stop_decoder(self: RTCRtpReceiver) -> None:
    _originals["receiver_stop_decoder"](self)
    path = receive_path(self)
    if path is not None:
        path.close()


# --------------------------------------------------------------------------------------------
# send path (3, 4)
# --------------------------------------------------------------------------------------------


class SpeechEncoder:
    """aiortc ``Encoder`` for opus: mono libopus at the frame's own rate, inline, with RTP
    timestamps taken from the frames' pts. Frames of 20 ms (what PlayoutTrack returns) map to
    one packet each; other sizes are re-framed (20/40/60 ms packets, one per call)."""

    def __init__(self, settings: OutboundOpus) -> None:
        self.settings = settings
        self._encoder: opus.Encoder | None = None
        self._resampler: av.AudioResampler | None = None
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
                self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RTP_RATE)
            frames = self._resampler.resample(frame)
            pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
            return pcm, RTP_RATE
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


def make_encoder(codec: Any) -> Any:
    if codec.mimeType.lower() == "audio/opus":
        return SpeechEncoder(_settings.outbound)
    return get_encoder(codec)


async def _sender_next_encoded_frame(self: RTCRtpSender, codec: Any) -> RTCEncodedFrame | None:
    """aiortc's ``_next_encoded_frame`` with inline audio encoding, voicegate's opus encoder
    and the numpy audio level (video keeps aiortc's executor path)."""
    data = await self._RTCRtpSender__track.recv()  # type: ignore[attr-defined]
    if not self._enabled:
        return None
    encoder = self._RTCRtpSender__encoder  # type: ignore[attr-defined]
    if encoder is None:
        encoder = self._RTCRtpSender__encoder = make_encoder(codec)  # type: ignore[attr-defined]
    audio_level = None
    if isinstance(data, av.AudioFrame):
        audio_level = audio_level_dbov(data)
        payloads, timestamp = encoder.encode(data, False)
    elif isinstance(data, av.frame.Frame):
        force = self._RTCRtpSender__force_keyframe  # type: ignore[attr-defined]
        self._RTCRtpSender__force_keyframe = False  # type: ignore[attr-defined]
        payloads, timestamp = await asyncio.get_running_loop().run_in_executor(
            None, encoder.encode, data, force
        )
    else:
        payloads, timestamp = encoder.pack(data)
    if not payloads:
        return None
    # aiortc itself passes None for "no level" (its annotation says int).
    return RTCEncodedFrame(payloads, timestamp, cast(int, audio_level))


# --------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------


def _patch(owner: Any, name: str, key: str, replacement: Callable[..., Any]) -> None:
    _originals[key] = getattr(owner, name)
    setattr(owner, name, replacement)


def apply(settings: MediaSettings | None = None) -> None:
    """Install every patch (idempotent; later calls only change the settings)."""
    global _applied, _settings
    if settings is not None:
        if settings.decode_rate not in opus.RATES:
            raise ValueError(f"decode_rate must be one of {opus.RATES}")
        _settings = settings
    if _applied:
        return
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(
            f"voicegate's aiortc patches are written for aiortc {AIORTC_VERSION}, "
            f"found {aiortc.__version__}; re-check rtcpatch.py before changing the pin"
        )
    opus.lib()  # fail at start-up, not on the first call, when libopus is missing
    _patch(RTCRtpReceiver, "__init__", "receiver_init", _receiver_init)
    _patch(RTCRtpReceiver, "receive", "receiver_receive", _receiver_receive)
    _patch(
        RTCRtpReceiver,
        "_RTCRtpReceiver__stop_decoder",
        "receiver_stop_decoder",
        _receiver_stop_decoder,
    )
    _patch(RTCRtpSender, "_next_encoded_frame", "sender_next", _sender_next_encoded_frame)
    _patch(aiortc_rtp, "compute_audio_level_dbov", "audio_level", audio_level_dbov)
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.setdefault("useinbandfec", 1)
            codec.parameters.setdefault("minptime", 10)
    _applied = True
    log.debug("aiortc_patched", aiortc=aiortc.__version__, libopus=opus.version())


def applied() -> bool:
    return _applied


def settings() -> MediaSettings:
    return _settings
