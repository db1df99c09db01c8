"""What a call tells the world: typed call events and the observer interface that receives them.

A call publishes its life (started, media connected, closing, ended with its reason), what it
measures (turn latency, RTP samples), the audio as it goes in and out, and every conversation
event (transcripts, barge-ins, tool calls, errors) to the ``CallObserver``s registered on it.
Metrics and recording are such observers (like Pipecat's observers): the call never calls them by
hand and never imports them; signaling, which wires a call up, registers them. This keeps the
layers pointing one way: observability imports these types, the call knows only the protocol.

Observers run on the event loop, inside the call's own callbacks: ``on_call_event`` must return
at once (count, enqueue), never block or await.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import av
import structlog
from aiortc.mediastreams import MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from voicegate.conversation import ConversationEvent, ConversationStats
from voicegate.media.rtp_stats import RtpSample

__all__ = [
    "BotAudio",
    "CallClosing",
    "CallConnected",
    "CallEnded",
    "CallEvent",
    "CallInfo",
    "CallObserver",
    "CallStarted",
    "Observers",
    "RtpStats",
    "TurnLatency",
    "UserAudio",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who and what a call is, as signaling admitted it: for observers that describe calls to
    the outside (the call history, webhooks, traces). Never the system prompt."""

    subject: str | None = None
    """The token's subject (None: open dev mode)."""
    agent: str = ""
    backend: str = ""
    adopted: bool = False
    """The call came over from another node that held it before (its start was seen there)."""
    started_at: float | None = None
    """Wall-clock start of the call when it began before this process had it."""
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The offer was answered and the conversation is running: from now on the call counts."""

    restart: bool = False
    """A reconnect of a call in progress: the conversation came over from the old connection."""
    info: CallInfo = CallInfo()


@dataclass(frozen=True, slots=True)
class CallConnected:
    """The media path is up (ICE and DTLS connected)."""

    seconds: float
    """From the offer to the connection."""


@dataclass(frozen=True, slots=True)
class CallClosing:
    """The call is letting go: the model stream is closed and the bot's voice stopped. No audio
    event follows it (recording closes its files here)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call released everything it held and left the registry; always the last event."""

    reason: str
    """Why: ``hangup``, ``client-disconnect``, ``connection-failed``, ``connect-timeout``,
    ``max-duration``, ``idle``, ``shutdown``, ``restart``, ``error:<kind>``, ``bad-offer``..."""
    seconds: float
    stats: ConversationStats
    handed_over: bool = False
    """The connection was replaced (``restart_pc``): the conversation and its stats live on in
    the call's next connection, whose own end counts the call."""


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """One turn: user stopped speaking -> first model audio (``model_s``) -> first audio frame
    handed to the RTP sender (``total_s``)."""

    total_s: float
    model_s: float | None


@dataclass(frozen=True, slots=True)
class RtpStats:
    """A periodic ``getStats()`` sample of the call's connection."""

    sample: RtpSample


@dataclass(frozen=True, slots=True)
class UserAudio:
    """The user's audio as the model receives it: 16 kHz mono s16. Only for observers whose
    ``wants_audio`` is true."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class BotAudio:
    """One outbound frame as aiortc takes it for encoding (what the browser hears, silence and
    barge-in cuts included): mono s16 at the call's output rate (24 kHz). Only for observers
    whose ``wants_audio`` is true."""

    pcm: bytes


CallEvent = (
    CallStarted
    | CallConnected
    | CallClosing
    | CallEnded
    | TurnLatency
    | RtpStats
    | UserAudio
    | BotAudio
    | ConversationEvent
)


class CallObserver(Protocol):
    """Anything that wants to know what calls do. ``wants_audio``: whether ``UserAudio`` and
    ``BotAudio`` (100 events a second per call) should be delivered; a call without such an
    observer does not tap its audio at all."""

    @property
    def wants_audio(self) -> bool: ...

    def on_call_event(self, call_id: str, event: CallEvent) -> None: ...


class Observers:
    """The observers registered on one call, and the fan-out of its events to them. A broken
    observer never takes the call down: its exception is logged and it hears no more of it.

    ``outbound``: the call's outgoing track, tapped for ``BotAudio`` once an observer wants
    audio (a call nobody records pays nothing per frame)."""

    def __init__(self, call_id: str, outbound: MediaStreamTrack) -> None:
        self.call_id = call_id
        self._outbound: MediaStreamTrack | None = outbound
        self._all: list[CallObserver] = []
        self._audio: list[CallObserver] = []

    def add(self, observer: CallObserver) -> None:
        self._all.append(observer)
        if observer.wants_audio:
            self._audio.append(observer)
            if self._outbound is not None:
                self._tap(self._outbound)
                self._outbound = None

    def _tap(self, track: MediaStreamTrack) -> None:
        """Publish each outbound frame as aiortc takes it for encoding: that is exactly what the
        browser hears, silence and barge-in cuts included. The track has no frame hook, so the
        tap wraps ``recv`` on this one instance."""
        inner = track.recv

        async def recv() -> Frame | Packet[Any]:
            frame = await inner()
            if self._audio and isinstance(frame, av.AudioFrame):
                self._deliver(self._audio, BotAudio(bytes(frame.planes[0])[: frame.samples * 2]))
            return frame

        track.recv = recv  # type: ignore[method-assign]

    def __iter__(self) -> Iterator[CallObserver]:
        return iter(tuple(self._all))

    @property
    def want_audio(self) -> bool:
        return bool(self._audio)

    def publish(self, event: CallEvent) -> None:
        self._deliver(self._all, event)
        if isinstance(event, CallClosing):
            # Frames still in flight while the transport closes are no longer the call's.
            self._audio.clear()

    def publish_audio(self, event: UserAudio | BotAudio) -> None:
        if self._audio:
            self._deliver(self._audio, event)

    def _deliver(self, observers: list[CallObserver], event: CallEvent) -> None:
        for observer in tuple(observers):
            try:
                observer.on_call_event(self.call_id, event)
            except Exception:
                log.exception(
                    "observer_failed", pc_id=self.call_id, observer=type(observer).__name__
                )
                for registered in (self._all, self._audio):
                    if observer in registered:
                        registered.remove(observer)
