"""The outbound audio track: paced, continuous, flushable.

aiortc does no pacing of its own: its sender calls ``recv()`` in a loop and sends whatever comes
back at once, and the RTP timestamp comes from the frame's ``pts``. So this track is the clock of
the bot's voice. It returns exactly one 20 ms frame per ``recv()`` (larger frames become several
RTP packets with one timestamp, which browsers mishandle), on a monotonic schedule, with pts that
never jump, and silence when there is nothing to say, so the browser's jitter buffer sees a steady
stream. The model delivers speech faster than real time; it waits here, bounded, and ``flush()``
drops it at once when the user barges in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

import av
import numpy as np
import structlog
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicegate.audio.pcm import pcm_frame

__all__ = [
    "FLOOR_RELAX_S",
    "LEAD_FLOOR_AFTER_UNDERRUN",
    "LEAD_FLOOR_FRAMES",
    "LEAD_STEADY_FRAMES",
    "LEAD_WINDOW_FRAMES",
    "MAX_LATE",
    "MAX_TRIM_PER_FRAME",
    "PTIME",
    "PlayoutTrack",
    "SILENT_PEAK",
    "STOP_HANGOVER_FRAMES",
]

log = structlog.get_logger(__name__)

PTIME: Final = 0.020
STOP_HANGOVER_FRAMES: Final = 10
"""Empty frames before the bot counts as stopped when the turn has not been marked finished."""
MAX_LATE: Final = 0.1
"""When the loop falls this far behind schedule, re-anchor the clock instead of bursting frames."""
LEAD_FLOOR_FRAMES: Final = 1
"""Queued audio a live (real-time) stream keeps as its cushion against arrival jitter: one
frame on a clean stream, ``LEAD_FLOOR_AFTER_UNDERRUN`` for a while after the stream ran dry
mid-speech (a late or lost frame upstream), like an adaptive jitter buffer."""
LEAD_FLOOR_AFTER_UNDERRUN: Final = 2
FLOOR_RELAX_S: Final = 5.0
LEAD_WINDOW_FRAMES: Final = 25
LEAD_STEADY_FRAMES: Final = 3
MAX_TRIM_PER_FRAME: Final = 5
SILENT_PEAK: Final = 64
"""A frame whose samples all stay within +-64 (-54 dBFS) counts as silence for lead trimming."""


class PlayoutTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        rate: int = 24000,
        max_seconds: float = 120.0,
        on_started: Callable[[float], None] | None = None,
        on_stopped: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__()
        self.rate = rate
        self.frame_samples = int(rate * PTIME)
        self._frame_bytes = self.frame_samples * 2
        self._max_bytes = int(max_seconds * rate) * 2
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already played
        self._buffered = 0  # bytes waiting
        self._silence = bytes(self._frame_bytes)
        self._start: float | None = None
        self._n = 0  # frames returned
        self._speaking = False
        self._empty_frames = 0
        self._turn_done = False
        self._on_started = on_started
        self._on_stopped = on_stopped
        self.frames_audio = 0
        self.frames_silence = 0
        self.dropped_overflow_bytes = 0
        self.flushed_bytes = 0
        self.resyncs = 0
        self.trimmed_frames = 0
        self._levels: deque[int] = deque(maxlen=LEAD_WINDOW_FRAMES)
        self._floor = LEAD_FLOOR_FRAMES * self._frame_bytes
        self._last_underrun = float("-inf")
        self.underruns = 0

    # -- producer side ---------------------------------------------------------------------

    def push(self, pcm: bytes) -> None:
        """Queue model audio (mono s16 at ``rate``). Beyond the bound, the excess is dropped
        and counted (and logged): it would be played minutes late anyway."""
        if not pcm:
            return
        room = self._max_bytes - self._buffered
        if len(pcm) > room:
            dropped = len(pcm) - max(room, 0)
            if self.dropped_overflow_bytes == 0:
                log.warning("playout_overflow", max_seconds=self._max_bytes / 2 / self.rate)
            self.dropped_overflow_bytes += dropped
            pcm = pcm[: max(room, 0)]
            if not pcm:
                return
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._chunks.append(pcm)
        self._buffered += len(pcm)
        self._turn_done = False

    def mark_turn_done(self) -> None:
        """The model finished this turn: report 'stopped' as soon as the queue drains."""
        self._turn_done = True

    def flush(self) -> int:
        """Drop everything queued (barge-in). Returns the samples dropped. The very next frame
        returned by ``recv()`` is silence."""
        dropped = self._buffered
        self._chunks.clear()
        self._head = 0
        self._buffered = 0
        self._levels.clear()
        self.flushed_bytes += dropped
        if self._speaking:
            self._set_stopped(interrupted=True)
        return dropped // 2

    @property
    def buffered_seconds(self) -> float:
        return self._buffered / 2 / self.rate

    @property
    def speaking(self) -> bool:
        return self._speaking

    # -- aiortc side -----------------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        else:
            delay = self._start + self._n * PTIME - now
            if delay > 0:
                await asyncio.sleep(delay)
                now = loop.time()
            elif delay < -MAX_LATE:
                # The loop stalled: re-anchor instead of sending a burst of back-to-back
                # frames. pts stays continuous; the receiver sees one late frame, not a flood.
                self._start = now - self._n * PTIME
                self.resyncs += 1
        if self.readyState != "live":
            raise MediaStreamError
        self._trim_lead()
        pcm = self._take()
        frame = pcm_frame(
            pcm if pcm is not None else self._silence, self.rate, self._n * self.frame_samples
        )
        self._n += 1
        if pcm is not None:
            self.frames_audio += 1
            self._empty_frames = 0
            if not self._speaking:
                self._speaking = True
                if self._on_started is not None:
                    self._on_started(now)
        else:
            self.frames_silence += 1
            if self._speaking:
                if self._empty_frames == 0 and not self._turn_done:
                    # Ran dry mid-speech: the source is live and late. Keep a bigger cushion.
                    self.underruns += 1
                    self._last_underrun = now
                    self._floor = LEAD_FLOOR_AFTER_UNDERRUN * self._frame_bytes
                self._empty_frames += 1
                if self._turn_done or self._empty_frames >= STOP_HANGOVER_FRAMES:
                    self._set_stopped(interrupted=False)
        return frame

    def _trim_lead(self) -> None:
        """Give back latency that stalls added to a live stream, by dropping silent frames.

        A source that produces audio at real time (an echo, a paced model) keeps whatever lead
        it once gained: every loop stall, silence fill or underrun adds to the queue and nothing
        ever takes it away, so the delay only ratchets up. When the queue has held a steady
        level (within a few frames for half a second) above the cushion, whole frames of
        silence (below -54 dBFS) at its head are dropped until it is back at the cushion. Speech is
        never touched, and a model streaming ahead of real time (its queue grows, then drains)
        is never steady, so its pauses keep their length.
        """
        relaxed = LEAD_FLOOR_FRAMES * self._frame_bytes
        if (
            self._floor > relaxed
            and asyncio.get_running_loop().time() - self._last_underrun > FLOOR_RELAX_S
        ):
            self._floor = relaxed
        levels = self._levels
        # The level the queue would have without trimming: a steady source stays steady
        # while its lead is being given back.
        levels.append(self._buffered + self.trimmed_frames * self._frame_bytes)
        if self._buffered < self._floor + self._frame_bytes or len(levels) < LEAD_WINDOW_FRAMES:
            return
        if max(levels) - min(levels) > LEAD_STEADY_FRAMES * self._frame_bytes:
            return
        trimmed = 0
        while (
            trimmed < MAX_TRIM_PER_FRAME
            and self._buffered >= self._floor + self._frame_bytes
            and self._head_is_silent()
        ):
            self._take()
            trimmed += 1
        self.trimmed_frames += trimmed

    def _head_is_silent(self) -> bool:
        """Whether the next whole frame queued is silence (without consuming it)."""
        need = self._frame_bytes
        head = self._head
        for chunk in self._chunks:
            piece = chunk[head : head + need]
            samples = np.frombuffer(piece, np.int16)
            if samples.size and int(np.abs(samples).max()) > SILENT_PEAK:
                return False
            need -= len(piece)
            head = 0
            if need <= 0:
                return True
        return False

    def _take(self) -> bytes | None:
        """One frame of queued audio (padded with silence at the very end), or None."""
        if self._buffered == 0:
            return None
        need = self._frame_bytes
        out = bytearray()
        while need and self._chunks:
            chunk = self._chunks[0]
            piece = chunk[self._head : self._head + need]
            out += piece
            need -= len(piece)
            self._head += len(piece)
            if self._head >= len(chunk):
                self._chunks.popleft()
                self._head = 0
        self._buffered -= len(out)
        if need:
            out += bytes(need)
        return bytes(out)

    def _set_stopped(self, interrupted: bool) -> None:
        self._speaking = False
        self._empty_frames = 0
        if self._on_stopped is not None:
            self._on_stopped(interrupted)
