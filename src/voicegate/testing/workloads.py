"""The two load-test workloads: what each caller plays and what it measures in the answer.

- ``markers``: continuous speech with a marker tone every second; the round trip of each marker
  (its onset handed to aiortc -> the first received frame holding it). This rewards a gateway
  whose model hop is an echo that answers every chunk at once, forever, at the input rate: any
  backlog the gateway builds up (start-up, a burst, a renewal) shows as round trip until it is
  shed, so it rewards gateways that trim backlog. It measures the media path, not a conversation.
- ``turns``: phrases separated by silence, answered once per turn by the brain after the turn
  ends (the echo backend, or the stand-in's turns brain with a fixed think time); the time from
  the caller's end of speech to the first frame of the answer at the caller. That is what a user
  waits for; minus the brain's think time it is the gateway's own cost.

Everything a caller sends is encoded once, up front, as browser-like Opus (SILK/hybrid ``voip``,
32 kbit/s, in-band FEC), so callers spend no CPU encoding and every call sends the same bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicegate.media import opus
from voicegate.testing import signals
from voicegate.testing.client import pace

RATE: Final = 48000
FRAME: Final = 960
TURN_SPEECH_S: Final = 1.6
TURN_GAP_S: Final = 4.4
"""Silence after each turn: room for a brain's think time and an answer as long as the turn."""
TURN_COUNT: Final = 8
MARKER_SIGNAL_S: Final = 60.0
AMBIGUOUS_S: Final = 0.95
"""Markers are 1 s apart: a round trip above this could pair with the wrong marker."""


@dataclass(frozen=True)
class Signal:
    """A workload's audio as Opus packets, with the frames that matter to its measurement."""

    name: str
    packets: list[bytes]
    marks: dict[int, str]
    """Frame index -> "marker" (a marker's onset), "start"/"end" (a turn's first/last voiced
    frame)."""


def _encode(pcm: np.ndarray) -> list[bytes]:
    enc = opus.Encoder(RATE, bitrate=32000, complexity=5, fec=True, loss_percent=10)
    return [enc.encode(pcm[i : i + FRAME].tobytes()) for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def build(name: str) -> Signal:
    """The encoded signal of workload ``name`` (a few seconds of CPU, done once per run)."""
    if name == "markers":
        sig, starts = signals.with_markers(signals.speech(RATE, MARKER_SIGNAL_S), RATE)
        return Signal(name, _encode(sig), {s // FRAME: "marker" for s in starts})
    if name == "turns":
        sig, bounds = signals.turns(RATE, TURN_COUNT, TURN_SPEECH_S, TURN_GAP_S)
        marks: dict[int, str] = {}
        for first, last in bounds:
            marks[first // FRAME] = "start"
            marks[last // FRAME] = "end"
        return Signal(name, _encode(sig), marks)
    raise ValueError(f"unknown workload {name!r} (markers or turns)")


class PacketTrack(MediaStreamTrack):
    """Plays a ``Signal`` in a loop as paced 20 ms Opus packets (no encoding per call), and
    notes when each marked frame is handed to aiortc."""

    kind = "audio"

    def __init__(self, signal: Signal, offset: int = 0) -> None:
        super().__init__()
        self._signal = signal
        self._offset = offset  # calls start at different places in the signal
        self._start: float | None = None
        self._n = 0
        self.sent: list[tuple[float, str]] = []

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        self._start = await pace(self._start, self._n)
        packets = self._signal.packets
        idx = (self._n + self._offset) % len(packets)
        packet = av.Packet(packets[idx])
        packet.pts = self._n * FRAME
        packet.time_base = Fraction(1, RATE)
        mark = self._signal.marks.get(idx)
        if mark is not None:
            self.sent.append((loop.time(), mark))
        self._n += 1
        return packet


def offset_for(signal: Signal, index: int) -> int:
    """Where call ``index`` starts in the signal: markers calls are staggered by 17 frames (so
    that their markers do not all reach the gateway in the same tick, and three calls' markers
    are 340 ms apart: a one-way split stays unambiguous); turns calls start at the beginning of
    a turn."""
    if signal.name == "turns":
        per_turn = len(signal.packets) // TURN_COUNT
        return (index % TURN_COUNT) * per_turn
    return (index * 17) % 50


@dataclass
class Analyzer:
    """Per call: what arrived (fed frame by frame), measured against what was sent."""

    workload: str
    detector: signals.Detector = field(default_factory=lambda: signals.Detector(16000))
    activity: signals.Activity = field(default_factory=signals.Activity)
    frames: list[float] = field(default_factory=list)

    def push(self, pcm: np.ndarray, rate: int, arrived: float) -> None:
        self.frames.append(arrived)
        if self.detector.rate != rate:
            self.detector = signals.Detector(rate)
        if self.workload == "markers":
            self.detector.push(pcm, arrived)
        else:
            self.activity.push(pcm, arrived)

    def round_trips(self, sent: list[tuple[float, str]]) -> list[tuple[float, float]]:
        """(send time, round trip ms) per detected marker: each detection pairs with the latest
        marker sent before it."""
        times = [t for t, mark in sent if mark == "marker"]
        out: list[tuple[float, float]] = []
        j = 0
        for t in self.detector.on_marker:
            while j + 1 < len(times) and times[j + 1] < t:
                j += 1
            if j < len(times) and times[j] < t and t - times[j] < AMBIGUOUS_S:
                out.append((times[j], (t - times[j]) * 1000))
        return out

    def turn_times(self, sent: list[tuple[float, str]]) -> list[tuple[float, float | None]]:
        """(end of speech, ms until the answer's first frame, or None when none came before the
        next turn started) per turn."""
        out: list[tuple[float, float | None]] = []
        voiced = self.activity.voiced
        marks = [(t, m) for t, m in sent if m in ("start", "end")]
        for i, (t, mark) in enumerate(marks):
            if mark != "end":
                continue
            bound = next((s for s, m in marks[i + 1 :] if m == "start"), float("inf"))
            first = next((v for v in voiced if t < v < bound), None)
            out.append((t, None if first is None else (first - t) * 1000))
        return out

    def measure(self, sent: list[tuple[float, str]], t0: float, t1: float) -> dict[str, Any]:
        """The call's figures over the window [t0, t1] (send times inside it count)."""
        window = max(1e-9, t1 - t0)
        out: dict[str, Any] = {
            "frames": sum(1 for t in self.frames if t0 <= t <= t1),
        }
        out["fps"] = round(out["frames"] / window, 2)
        if self.workload == "markers":
            rtts = [(t, ms) for t, ms in self.round_trips(sent) if t0 <= t <= t1]
            sent_n = sum(1 for t, m in sent if m == "marker" and t0 <= t <= t1)
            out["rtt_ms"] = [round(ms, 1) for _, ms in rtts]
            out["rtt_at_s"] = [round(t - t0, 2) for t, _ in rtts]
            out["markers_sent"] = sent_n
            out["markers_lost"] = max(0, sent_n - len(rtts))
            # More markers heard than sent: the far end played some of them twice.
            out["markers_heard"] = sum(1 for t in self.detector.on_marker if t0 <= t <= t1)
        else:
            turns = [(t, ms) for t, ms in self.turn_times(sent) if t0 <= t <= t1]
            out["turn_ms"] = [round(ms, 1) for _, ms in turns if ms is not None]
            out["turn_at_s"] = [round(t - t0, 2) for t, ms in turns if ms is not None]
            out["turns"] = len(turns)
            out["turns_unanswered"] = sum(1 for _, ms in turns if ms is None)
        return out
