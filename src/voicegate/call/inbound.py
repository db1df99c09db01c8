"""The user's side of a call: the inbound audio pump, the gateway's speaking detector, turn timing.

The pump consumes the browser's track at once (aiortc queues received frames without bound),
resamples to the backend's input rate (16 kHz, or Bedrock's ``--model-input-rate``) and hands
model-sized chunks to the conversation; the speaking detector and the recording keep 16 kHz.
Beside it, webrtcvad marks where the user starts and stops speaking: only for the page
(``user-started-speaking``) and for turn timing, because the model decides turns itself. A track
that goes quiet (no frames at all, not silence: browsers send frames continuously) is reported
as stalled, since aiortc only notices a dead path after ~30 s of ICE consent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import av
import structlog
import webrtcvad
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicegate.audio.chunks import Chunker, chunk_samples
from voicegate.audio.pcm import Int16Array
from voicegate.audio.resample import InboundResampler

__all__ = [
    "InboundListener",
    "InboundPump",
    "MAX_TYPED_TEXTS",
    "TYPED_TEXT_BURST",
    "TYPED_TEXT_PER_MINUTE",
    "TextTarget",
    "TurnClock",
    "TurnTiming",
    "TypedText",
    "VAD_FRAME",
    "VAD_RATE",
    "VAD_START_FRAMES",
    "VAD_STOP_FRAMES",
    "drain",
]

log = structlog.get_logger(__name__)

VAD_RATE: Final = 16000
"""The call's own rate: the speaking detector (webrtcvad takes 8/16/32/48 kHz, not 24) and the
recording, whatever rate the model takes."""
VAD_FRAME: Final = 320  # 20 ms at 16 kHz, what webrtcvad accepts
VAD_START_FRAMES: Final = 3
VAD_STOP_FRAMES: Final = 25  # 500 ms of non-speech
MAX_TYPED_TEXTS: Final = 8
"""Typed texts waiting for the conversation; a client flooding the channel gets errors."""
TYPED_TEXT_BURST: Final = 20
"""Typed texts a call may send at once. Every text the model takes is paid for, and the wait
queue alone does not bound the rate (a fast model drains it), so each call has a token bucket."""
TYPED_TEXT_PER_MINUTE: Final = 20
"""The sustained typed-text rate per call: a person typing, not a script."""


@dataclass(slots=True)
class TurnTiming:
    user_stopped: float | None = None
    model_audio: float | None = None
    reported: bool = True


class TurnClock:
    """Per turn: user stopped speaking -> first model audio -> first audio frame handed to the
    sender. Times are loop times; a turn is measured once, from the user's last speech frame."""

    def __init__(self) -> None:
        self._timing = TurnTiming()

    def user_started(self, at: float) -> None:
        self._timing = TurnTiming(user_stopped=at, reported=False)

    def user_speech(self, at: float) -> None:
        self._timing.user_stopped = at

    def model_audio(self, at: float) -> None:
        if self._timing.model_audio is None:
            self._timing.model_audio = at

    def bot_started(self, at: float) -> tuple[float, float | None] | None:
        """``(total_ms, model_ms)`` of the turn the bot starts answering, or None when there is
        no unmeasured user turn (the bot speaks again, or first)."""
        timing = self._timing
        if timing.reported or timing.user_stopped is None:
            return None
        timing.reported = True
        total = (at - timing.user_stopped) * 1000
        model = (
            (timing.model_audio - timing.user_stopped) * 1000
            if timing.model_audio is not None
            else None
        )
        return total, model


class InboundListener(Protocol):
    """What the pump tells its call."""

    def inbound_stalled(self) -> None:
        """No frame for ``stall_after`` seconds; the pump keeps waiting."""

    def inbound_frame(self) -> None:
        """A frame arrived (the path works, whatever was said about it before)."""

    def inbound_audio(self, pcm: Int16Array) -> None:
        """The user's audio at 16 kHz mono int16 (what is recorded), before chunking."""

    def user_speech(self) -> None:
        """A 20 ms frame the speaking detector counts as speech."""

    def user_started_speaking(self) -> None: ...

    def user_stopped_speaking(self) -> None: ...


class InboundPump:
    """Reads one inbound audio track until it ends; ``stats`` counts frames in, chunks out."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        listener: InboundListener,
        clock: TurnClock,
        stall_after: float,
        stats: dict[str, int],
        rate: int = VAD_RATE,
    ) -> None:
        """``rate``: the sample rate the conversation's backend takes (``Backend.input_rate``);
        the chunks sent are ``--model-chunk-ms`` long at that rate."""
        self._send = send
        self.rate = rate
        self._listener = listener
        self._clock = clock
        self._stall_after = stall_after
        self.stats = stats
        self.user_speaking = False

    async def run(self, track: MediaStreamTrack) -> None:
        resampler = InboundResampler(VAD_RATE, self.rate)
        chunker = Chunker(chunk_samples(self.rate))
        vad_chunker = Chunker(VAD_FRAME)
        vad = webrtcvad.Vad(3)
        speech_run = 0
        quiet_run = 0
        loop = asyncio.get_running_loop()
        send = self._send
        listener = self._listener
        while True:
            try:
                async with asyncio.timeout(self._stall_after):
                    frame = await track.recv()
            except MediaStreamError:
                return
            except TimeoutError:
                listener.inbound_stalled()  # keep waiting: the reconnect grace runs
                continue
            listener.inbound_frame()
            if not isinstance(frame, av.AudioFrame):
                continue
            self.stats["frames_in"] += 1
            pcm, model_pcm = resampler.split(frame)
            listener.inbound_audio(pcm)
            for chunk in chunker.push(model_pcm):
                send(chunk)
                self.stats["chunks_out"] += 1
            for vframe in vad_chunker.push(pcm):
                if vad.is_speech(vframe, VAD_RATE):
                    listener.user_speech()
                    speech_run += 1
                    quiet_run = 0
                    if self.user_speaking:
                        self._clock.user_speech(loop.time())
                    elif speech_run >= VAD_START_FRAMES:
                        self.user_speaking = True
                        self._clock.user_started(loop.time())
                        listener.user_started_speaking()
                else:
                    speech_run = 0
                    quiet_run += 1
                    if self.user_speaking and quiet_run >= VAD_STOP_FRAMES:
                        self.user_speaking = False
                        listener.user_stopped_speaking()


async def drain(track: MediaStreamTrack) -> None:
    """Consume a track nobody listens to (video): aiortc would queue its frames without bound."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


def _now() -> float:
    """The typed-text bucket's clock, looked up per call so a test can hold it still."""
    return time.monotonic()


class TextTarget(Protocol):
    """Where typed text goes: the conversation (``Conversation.send_text``)."""

    async def send_text(self, text: str) -> None: ...


class TypedText:
    """The user's typed text (RTVI ``send-text``) on its way to the conversation: in order, one
    at a time, at most ``MAX_TYPED_TEXTS`` waiting. Every failure is told to the page through
    ``on_error(message, request_id)``; none of them ends the call."""

    def __init__(
        self,
        target: TextTarget,
        on_error: Callable[[str, str | None], None],
        on_limited: Callable[[], None] = lambda: None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        clock = clock or _now
        self._target = target
        self._on_error = on_error
        self._on_limited = on_limited
        self._queue: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue(MAX_TYPED_TEXTS)
        self._clock = clock
        self._tokens = float(TYPED_TEXT_BURST)
        self._refilled = clock()
        self.limited = 0
        """Texts refused for the rate (each also counted by ``on_limited`` and told the page)."""

    def _spend(self) -> float:
        """0.0 and one text spent, or the seconds until the bucket has one again."""
        now = self._clock()
        rate = TYPED_TEXT_PER_MINUTE / 60.0
        self._tokens = min(float(TYPED_TEXT_BURST), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def put(self, text: str, request_id: str | None) -> None:
        wait = self._spend()
        if wait > 0.0:
            self.limited += 1
            self._on_limited()
            if self.limited == 1 or self.limited % 100 == 0:  # a flood logs a line per 100
                log.warning("typed_text_rate_limited", refused=self.limited)
            self._on_error(
                f"too many typed messages (at most {TYPED_TEXT_BURST} at once, "
                f"{TYPED_TEXT_PER_MINUTE} a minute); this one was dropped, "
                f"try again in {max(1, round(wait))} s",
                request_id,
            )
            return
        try:
            self._queue.put_nowait((text, request_id))
        except asyncio.QueueFull:
            self._on_error(
                f"too many typed messages at once (at most {MAX_TYPED_TEXTS} wait); "
                "this one was dropped",
                request_id,
            )

    async def run(self) -> None:
        while True:
            text, request_id = await self._queue.get()
            try:
                await self._target.send_text(text)
            except Exception as exc:  # the conversation refused it: tell the page, carry on
                log.warning("send_text_failed", error=f"{type(exc).__name__}: {exc}")
                self._on_error("the text could not be sent to the model", request_id)
