"""One browser call: the RTCPeerConnection, its audio in and out, and its data channel.

A PeerSession owns everything a call has (peer connection, inbound pump task, outbound
PlayoutTrack, data channel, Conversation) and releases all of it in ``close()``, whichever side
ends the call. It turns conversation events into RTVI messages and measures each turn's latency
(user stopped speaking -> first model audio -> first audio frame handed to the sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import av
import structlog
import webrtcvad
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    sdp,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from voicegate import rtvi
from voicegate.audio import Chunker, InboundResampler
from voicegate.backends.base import Backend
from voicegate.conversation import (
    BotAudioStarted,
    BotInterrupted,
    BotText,
    BotTurnDone,
    Conversation,
    ConversationEnded,
    ConversationError,
    ConversationEvent,
    ConversationSettings,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
    UserTranscript,
)
from voicegate.playout import PlayoutTrack
from voicegate.tools import ToolRegistry

log = structlog.get_logger(__name__)

VAD_FRAME: Final = 320  # 20 ms at 16 kHz, what webrtcvad accepts
VAD_START_FRAMES: Final = 3
VAD_STOP_FRAMES: Final = 25  # 500 ms of non-speech
MAX_PENDING_MESSAGES: Final = 64
"""Data-channel messages kept while the channel is not open yet; older ones give way, counted."""
CLOSE_TIMEOUT: Final = 5.0


class OfferError(ValueError):
    """The offer cannot be accepted; the message is shown to the client."""


@dataclass(frozen=True, slots=True)
class PeerOptions:
    ice_servers: tuple[RTCIceServer, ...] = ()
    relay_only: bool = False
    max_call_seconds: float = 3600.0


@dataclass(slots=True)
class TurnTiming:
    user_stopped: float | None = None
    model_audio: float | None = None
    reported: bool = True


class PeerSession:
    def __init__(
        self,
        pc_id: str,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        options: PeerOptions,
        on_closed: Callable[[PeerSession], None],
    ) -> None:
        self.pc_id = pc_id
        self.backend_name = backend.name
        self.options = options
        self.created = time.monotonic()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._on_closed = on_closed
        self._closing = False
        config = RTCConfiguration(iceServers=list(options.ice_servers))
        if options.relay_only:
            from aiortc.rtcconfiguration import RTCIceTransportPolicy

            config.iceTransportPolicy = RTCIceTransportPolicy.RELAY
        # An explicit (possibly empty) list: aiortc would otherwise add a public Google STUN
        # server by itself, which a self-hosted gateway must never contact unasked.
        self.pc = RTCPeerConnection(configuration=config)
        self.playout = PlayoutTrack(
            rate=settings.output_rate,
            on_started=self._bot_started,
            on_stopped=self._bot_stopped,
        )
        self.conversation = Conversation(backend, settings, tools, self)
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_MESSAGES)
        self.messages_dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timing = TurnTiming()
        self.turn_latencies_ms: list[float] = []
        self._user_speaking = False
        self.stats: dict[str, int] = {"frames_in": 0, "chunks_out": 0}
        self._log = log.bind(pc_id=pc_id)

    # -- signaling ---------------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Negotiate the call and start the conversation; both must succeed."""
        if "m=audio" not in offer.sdp:
            raise OfferError("the offer has no audio section (m=audio)")
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            # aiortc's parser reports malformed SDP with bare asserts and assorted exceptions;
            # parse first so that any of them becomes a clear 400, not a 500.
            parsed = sdp.SessionDescription.parse(offer.sdp)
        except Exception as exc:
            raise OfferError(f"the offer SDP could not be parsed ({type(exc).__name__})") from exc
        if not any(m.kind == "audio" for m in parsed.media):
            raise OfferError("the offer has no audio section (m=audio)")
        try:
            await pc.setRemoteDescription(offer)
        except (ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
            raise OfferError(
                f"the offer SDP could not be used: {exc or type(exc).__name__}"
            ) from exc
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the offer has no audio transceiver")
        pc.addTrack(self.playout)
        conversation = asyncio.ensure_future(self.conversation.start())
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            conversation.cancel()
            with contextlib.suppress(BaseException):
                await conversation
            raise
        await conversation  # BackendError propagates: the caller answers 502 and closes us
        self._spawn(self._watch_conversation())
        self._spawn(self._deadline())
        desc = pc.localDescription
        return RTCSessionDescription(sdp=desc.sdp, type=desc.type)

    async def add_candidates(self, candidates: list[RTCIceCandidate]) -> None:
        for candidate in candidates:
            await self.pc.addIceCandidate(candidate)

    # -- media -------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._pump(track))
        else:
            # Always consume: aiortc queues received frames without bound (pipecat PR #2682).
            self._spawn(self._drain(track))

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _pump(self, track: MediaStreamTrack) -> None:
        resampler = InboundResampler()
        chunker = Chunker()
        vad_chunker = Chunker(VAD_FRAME)
        vad = webrtcvad.Vad(3)
        speech_run = 0
        quiet_run = 0
        loop = asyncio.get_running_loop()
        send = self.conversation.send_audio
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self.stats["frames_in"] += 1
            pcm = resampler.process(frame)
            for chunk in chunker.push(pcm):
                send(chunk)
                self.stats["chunks_out"] += 1
            for vframe in vad_chunker.push(pcm):
                if vad.is_speech(vframe, 16000):
                    speech_run += 1
                    quiet_run = 0
                    if self._user_speaking:
                        self._timing.user_stopped = loop.time()
                    elif speech_run >= VAD_START_FRAMES:
                        self._user_speaking = True
                        self._timing = TurnTiming(user_stopped=loop.time(), reported=False)
                        self.send_message(rtvi.message("user-started-speaking"))
                else:
                    speech_run = 0
                    quiet_run += 1
                    if self._user_speaking and quiet_run >= VAD_STOP_FRAMES:
                        self._user_speaking = False
                        self.send_message(rtvi.message("user-stopped-speaking"))

    def _bot_started(self, at: float) -> None:
        self.send_message(rtvi.message("bot-started-speaking"))
        timing = self._timing
        if timing.reported or timing.user_stopped is None:
            return
        timing.reported = True
        total = (at - timing.user_stopped) * 1000
        model = (
            (timing.model_audio - timing.user_stopped) * 1000
            if timing.model_audio is not None
            else None
        )
        self.turn_latencies_ms.append(total)
        self.send_message(
            rtvi.server_message(
                "turn-latency",
                total_ms=round(total, 1),
                model_ms=None if model is None else round(model, 1),
                playout_ms=None if model is None else round(total - model, 1),
            )
        )

    def _bot_stopped(self, interrupted: bool) -> None:
        self.send_message(rtvi.message("bot-stopped-speaking", {"interrupted": interrupted}))

    # -- ConversationListener --------------------------------------------------------------

    def on_audio(self, pcm: bytes) -> None:
        self.playout.push(pcm)

    def on_flush(self) -> int:
        return self.playout.flush()

    def on_event(self, event: ConversationEvent) -> None:
        match event:
            case UserTranscript():
                self.send_message(rtvi.user_transcription(event.text, event.final, self.pc_id))
            case BotText():
                kind = "bot-transcription" if event.final else "bot-llm-text"
                self.send_message(rtvi.message(kind, {"text": event.text}))
            case BotAudioStarted():
                if self._timing.model_audio is None:
                    self._timing.model_audio = event.at
            case BotInterrupted():
                self.send_message(
                    rtvi.message("bot-interrupted", {"dropped_ms": event.dropped_samples / 24})
                )
            case BotTurnDone():
                self.playout.mark_turn_done()
            case ToolCallStarted():
                self.send_message(
                    rtvi.message(
                        "llm-function-call",
                        {
                            "function_name": event.name,
                            "tool_call_id": event.tool_use_id,
                            "args": _json_or_text(event.arguments),
                        },
                    )
                )
            case ToolCallFinished():
                self.send_message(
                    rtvi.server_message(
                        "tool-result",
                        function_name=event.name,
                        tool_call_id=event.tool_use_id,
                        ok=event.ok,
                        result=_json_or_text(event.result),
                    )
                )
            case Usage():
                self.send_message(
                    rtvi.message(
                        "metrics",
                        {
                            "usage": {
                                "input_tokens": event.input_tokens,
                                "output_tokens": event.output_tokens,
                                "total_tokens": event.total_tokens,
                            }
                        },
                    )
                )
            case ConversationError():
                self.send_message(rtvi.error(event.message, event.fatal, event.kind))
            case ConversationEnded():
                pass

    # -- data channel ----------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:
            return  # one channel per call; extra ones are ignored
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush_pending)
        if channel.readyState == "open":
            self._flush_pending()

    def _flush_pending(self) -> None:
        channel = self._channel
        while self._pending and channel is not None and channel.readyState == "open":
            channel.send(self._pending.popleft())

    def _on_message(self, raw: str | bytes) -> None:
        msg = rtvi.parse(raw)
        if msg is None:
            return
        if msg["type"] == "client-ready":
            request_id = msg.get("id") if isinstance(msg.get("id"), str) else None
            self.send_message(rtvi.bot_ready(request_id, self.backend_name))
        elif msg["type"] == "disconnect-bot":
            self._spawn(self.close("client-disconnect"))

    def send_message(self, text: str) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
            return
        if len(self._pending) == self._pending.maxlen:
            self.messages_dropped += 1
        self._pending.append(text)

    # -- lifetime ----------------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self._log.info("connection_state", state=state)
        if state in ("failed", "closed"):
            self._spawn(self.close(f"connection-{state}"))

    async def _watch_conversation(self) -> None:
        await self.conversation.ended.wait()
        reason = self.conversation.end_reason
        if reason.startswith("error:"):
            # Let the error message reach the browser before the transport goes away.
            await asyncio.sleep(0.5)
            await self.close(reason)

    async def _deadline(self) -> None:
        await asyncio.sleep(self.options.max_call_seconds)
        self.send_message(rtvi.error("the call reached its maximum duration", True, "max_duration"))
        await asyncio.sleep(0.5)
        await self.close("max-duration")

    def _spawn(self, coro: Any) -> None:
        if self._closing and self.closed.is_set():
            coro.close()
            return
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str = "hangup") -> None:
        """Release everything the call holds. Idempotent; safe from any task of the call."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        self._log.info("call_closing", reason=reason)
        current = asyncio.current_task()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.conversation.close(reason)
        except TimeoutError:
            self._log.warning("conversation_close_timeout")
        self.playout.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.pc.close()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.closed.set()
        self._on_closed(self)
        self._log.info(
            "call_closed",
            reason=reason,
            seconds=round(time.monotonic() - self.created, 1),
            turns=self.conversation.stats.turns,
        )


def _json_or_text(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text
