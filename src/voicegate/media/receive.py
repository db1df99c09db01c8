"""The inbound audio path of a patched ``RTCRtpReceiver``: ordering, loss handling, decoding.

It takes the place of aiortc's audio ``JitterBuffer`` (aiortc#543 "Audio Jitter Buffer", closed
as stale: ``JitterBuffer(capacity=16, prefetch=4)`` holds every frame until four more have
arrived, +80 ms one way; one lost packet stalls it ~320 ms and leaves +200 ms for the rest of the
call; it has no concealment) and of the decoder thread (aiortc#505/#744: one thread per receiver
and a hand-off per frame cost more than the decode).

A packet that arrives in order is decoded inline with libopus (``opus.Decoder``, straight to the
rate voicegate wants) and handed to the track at once. A gap waits at most an adaptive *reorder
hold* (0 on a clean network, up to 3 frames once packets are seen arriving late) and is then
filled, one frame per lost packet: Opus in-band FEC from the next packet for the last lost frame
when that packet carries it, packet-loss concealment for the rest. Time is never skipped: pts stay
continuous, so latency returns to its floor right after a loss. ``patch.apply()`` installs it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import av
from aiortc import rtp as aiortc_rtp
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from voicegate.audio.pcm import pcm_frame
from voicegate.media import opus
from voicegate.media.opus import RTP_RATE

__all__ = [
    "AudioReceivePath",
    "HOLD_DECAY_AFTER",
    "HOLD_MAX",
    "HOLD_STEP",
    "MAX_CONCEAL_FRAMES",
    "MAX_PENDING",
    "MAX_QUEUED_FRAMES",
    "RESET_GAP",
    "ReceiveStats",
    "receive_path",
]

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


@dataclass(slots=True)
class ReceiveStats:
    packets: int = 0
    decoded: int = 0
    concealed: int = 0
    """Frames made up by packet-loss concealment."""
    recovered: int = 0
    """Lost frames rebuilt from the in-band FEC (LBRR) data the next packet carried."""
    late: int = 0
    """Packets that arrived after their frame had been concealed (dropped)."""
    duplicates: int = 0
    dropped_unread: int = 0
    resets: int = 0
    skipped_samples: int = 0
    """Samples of a very long gap left to the consumer's silence fill (48 kHz units)."""


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
        # Only the frame right before the held packet can come back from that packet's in-band
        # FEC, and only if the sender put LBRR data in it (SILK/hybrid with FEC on and loss
        # expected; CELT never has any). Otherwise libopus would quietly conceal instead, so
        # ask the packet rather than count every gap as recovered.
        fec = opus.packet_has_lbrr(first_data)
        for i in range(skip, missing):
            samples = per * self.rate // RTP_RATE
            if fec and i == missing - 1:
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
            self._enqueue(pcm_frame(pcm, self.rate, rel_ts * self.rate // RTP_RATE))

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
