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

from voicegate.backends.base import Backend
from voicegate.call import rtvi
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
    SessionContinued,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
    UserTranscript,
)
from voicegate.conversation.tools import ToolRegistry
from voicegate.media.audio import Chunker, InboundResampler
from voicegate.media.playout import PlayoutTrack
from voicegate.observability.metrics import (
    RTP_SAMPLE_INTERVAL,
    GatewayMetrics,
    RtpSample,
    rtp_sample,
)
from voicegate.observability.recording import CallRecording

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
    idle_timeout: float = 0.0
    """issue 7: end the call after this long without speech either way (0: never)."""
    metrics: GatewayMetrics | None = None
    """issue 7: where turn latency, barge-ins, backend errors and RTP samples are counted."""
    recording: CallRecording | None = None
    """issue 7: this call's recording, when the operator enabled it and the call asked for it."""
    reconnect_grace: float = 30.0
    """issue 4: after the browser's connection drops, the conversation waits this long for the
    page to reconnect (``restart_pc``) before the call is freed."""
    stall_after: float = 5.0
    """issue 4: no inbound audio for this long counts as a dropped connection (browsers send
    audio frames continuously; aiortc only notices a dead path after ~30 s of ICE consent)."""


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
        conversation: Conversation | None = None,
    ) -> None:
        """``conversation``: one that survives from this call's previous connection (issue 4,
        browser reconnect); it is already running and keeps its history."""
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
        self._adopted = conversation is not None
        self.conversation = conversation or Conversation(backend, settings, tools, self)
        self.conversation.listener = self
        self._detaching = False
        self._grace: asyncio.Task[None] | None = None
        self.metrics = options.metrics
        self.recording = options.recording
        self.rtp: RtpSample | None = None  # the latest getStats() sample
        if self.recording is not None:
            self._tap_playout(self.recording)
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_MESSAGES)
        self.messages_dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timing = TurnTiming()
        self.turn_latencies_ms: list[float] = []
        self._user_speaking = False
        self._last_activity = time.monotonic()  # issue 7: user speech or bot audio
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
        # Mandatory per RFC 8829 5.8.3; aiortc dereferences them unchecked and fails with an
        # AttributeError, in setRemoteDescription or later in a background task
        # (aiortc/aiortc#391, aiortc/aiortc#255). Found by tests/test_fuzz_http.py.
        for i, media in enumerate(parsed.media):
            if media.dtls is None or not media.dtls.fingerprints:
                raise OfferError(f"media section {i} of the offer has no DTLS fingerprint")
            if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
                raise OfferError(f"media section {i} of the offer has no ICE ufrag/pwd")
        try:
            await pc.setRemoteDescription(offer)
        except (ValueError, TypeError, KeyError, IndexError, AssertionError, AttributeError) as exc:
            raise OfferError(
                f"the offer SDP could not be used: {exc or type(exc).__name__}"
            ) from exc
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the offer has no audio transceiver")
        pc.addTrack(self.playout)
        conversation = asyncio.ensure_future(
            _already_started() if self._adopted else self.conversation.start()
        )
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException as exc:
            conversation.cancel()
            with contextlib.suppress(BaseException):
                await conversation
            # Offers aiortc accepted but cannot answer (e.g. a section left without a transport
            # by odd BUNDLE groups) end in AttributeError inside aiortc; same family as
            # aiortc/aiortc#391. Found by tests/test_fuzz_http.py.
            if isinstance(exc, ValueError | TypeError | KeyError | IndexError | AttributeError):
                raise OfferError(
                    f"no answer is possible for this offer ({type(exc).__name__})"
                ) from exc
            raise
        await conversation  # BackendError propagates: the caller answers 502 and closes us
        self._spawn(self._watch_conversation())
        self._spawn(self._deadline())
        self._spawn(self._sample_rtp())
        if self.options.idle_timeout > 0:
            self._spawn(self._idle_watch())
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
                async with asyncio.timeout(self.options.stall_after):
                    frame = await track.recv()
            except MediaStreamError:
                return
            except TimeoutError:
                self._connection_lost("stalled")  # issue 4: keep waiting, the grace runs
                continue
            if self._grace is not None:
                self._connection_back()
            if not isinstance(frame, av.AudioFrame):
                continue
            self.stats["frames_in"] += 1
            pcm = resampler.process(frame)
            if self.recording is not None:
                self.recording.user(pcm.tobytes())
            for chunk in chunker.push(pcm):
                send(chunk)
                self.stats["chunks_out"] += 1
            for vframe in vad_chunker.push(pcm):
                if vad.is_speech(vframe, 16000):
                    self._last_activity = time.monotonic()
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
        if self.metrics is not None:
            self.metrics.observe_turn(total / 1000, None if model is None else model / 1000)
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
        self._last_activity = time.monotonic()
        self.playout.push(pcm)

    def on_flush(self) -> int:
        return self.playout.flush()

    def on_event(self, event: ConversationEvent) -> None:
        match event:
            case UserTranscript():
                self.send_message(rtvi.user_transcription(event.text, event.final, self.pc_id))
                if event.final:
                    self._transcript("user", event.text)
            case BotText():
                kind = "bot-transcription" if event.final else "bot-llm-text"
                self.send_message(rtvi.message(kind, {"text": event.text}))
                if event.final:
                    self._transcript("assistant", event.text)
            case BotAudioStarted():
                if self._timing.model_audio is None:
                    self._timing.model_audio = event.at
            case BotInterrupted():
                if self.metrics is not None:
                    self.metrics.barge_ins.inc()
                if self.recording is not None:
                    self.recording.line("interrupted", dropped_ms=event.dropped_samples / 24)
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
                if self.recording is not None:
                    self.recording.line("tool", name=event.name, ok=event.ok, result=event.result)
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
                if self.metrics is not None:
                    self.metrics.backend_errors.inc(kind=event.kind)
                self.send_message(rtvi.error(event.message, event.fatal, event.kind))
            case SessionContinued():  # issue 4: for the debug panel, never an error
                self.send_message(
                    rtvi.server_message(
                        event.kind,
                        reason=event.reason,
                        stream=event.leg,
                        gap_ms=event.gap_ms,
                        forced=event.forced,
                        attempts=event.attempts,
                        history_messages=event.history_messages,
                        history_bytes=event.history_bytes,
                        replayed_ms=event.replayed_ms,
                    )
                )
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
        if state == "closed":  # the browser closed its side: a deliberate end
            self._spawn(self.close(f"connection-{state}"))
        elif state == "failed":
            self._connection_lost(state)

    # -- browser reconnect (issue 4) ----------------------------------------------------------

    def _connection_lost(self, how: str) -> None:
        """The path to the browser is gone (network change, sleeping laptop): keep the
        conversation for the grace period so the page can reconnect with ``restart_pc``."""
        if self._grace is not None or self._closing:
            return
        self._log.info("connection_lost", how=how, grace_s=self.options.reconnect_grace)
        self._grace = asyncio.ensure_future(self._grace_then_close(how))
        self._tasks.add(self._grace)
        self._grace.add_done_callback(self._tasks.discard)

    def _connection_back(self) -> None:
        if self._grace is not None and self.pc.connectionState != "failed":
            self._log.info("connection_back")
            self._grace.cancel()
            self._grace = None

    async def _grace_then_close(self, how: str) -> None:
        await asyncio.sleep(self.options.reconnect_grace)
        await self.close(f"connection-{how}")

    async def detach(self) -> Conversation | None:
        """Release this connection but not its conversation, which is returned (None if it has
        ended) for the call's next connection (``restart_pc`` with the same pc_id)."""
        if self._closing:
            await self.closed.wait()
            return None
        self._detaching = not self.conversation.ended.is_set()
        await self.close("restart" if self._detaching else "restart-after-end")
        return self.conversation if self._detaching else None

    async def _watch_conversation(self) -> None:
        await self.conversation.ended.wait()
        reason = self.conversation.end_reason
        if reason.startswith("error:"):
            # Let the error message reach the browser before the transport goes away.
            await asyncio.sleep(0.5)
            await self.close(reason)

    async def _deadline(self) -> None:
        await asyncio.sleep(self.options.max_call_seconds)
        await self.end("the call reached its maximum duration", "max_duration", "max-duration")

    async def _idle_watch(self) -> None:
        """A timer, not a poll: it sleeps until the idle deadline and re-arms if anything was said
        meanwhile. A forgotten open tab would otherwise keep a paid Bedrock stream running."""
        timeout = self.options.idle_timeout
        while True:
            if self.playout.speaking:
                self._last_activity = time.monotonic()
            due = self._last_activity + timeout - time.monotonic()
            if due <= 0:
                break
            await asyncio.sleep(due)
        await self.end(f"the call ended after {timeout:g} s without speech", "idle", "idle")

    async def end(self, message: str, kind: str, reason: str) -> None:
        """End the call with a fatal error message the browser can show (max duration, idle,
        server shutdown), giving the message a moment to leave before the transport closes."""
        if self._closing:
            await self.closed.wait()
            return
        self._log.info("call_ending", reason=reason)
        self.send_message(rtvi.error(message, True, kind))
        await asyncio.sleep(0.5)
        await self.close(reason)

    # -- observability (issue 7) -------------------------------------------------------------

    def _transcript(self, role: str, text: str) -> None:
        # The text is dropped from the line by logs.Redactor unless --log-transcripts is on.
        self._log.info("transcript", role=role, text=text)
        if self.recording is not None:
            self.recording.line(role, text=text)

    def _tap_playout(self, recording: CallRecording) -> None:
        """Record each outbound frame as aiortc takes it for encoding: that is exactly what the
        browser hears, silence and barge-in cuts included. PlayoutTrack has no frame hook, so
        the tap wraps ``recv`` on this one instance."""
        inner = self.playout.recv

        async def recv() -> av.AudioFrame:
            frame = await inner()
            recording.bot(bytes(frame.planes[0])[: frame.samples * 2])
            return frame

        self.playout.recv = recv  # type: ignore[method-assign]

    async def _sample_rtp(self) -> None:
        """Every few seconds, aiortc's ``getStats()`` (loss, jitter, RTT from RTCP) goes to the
        metrics and to the page's debug panel as a ``server-message`` of kind ``rtp-stats``."""
        while True:
            await asyncio.sleep(RTP_SAMPLE_INTERVAL)
            try:
                report = await self.pc.getStats()
            except Exception:  # a transport torn down under us: the call is ending
                return
            sample = rtp_sample(report.values())
            self.rtp = sample
            if self.metrics is not None:
                self.metrics.observe_rtp(self.pc_id, sample)
            self.send_message(rtvi.server_message("rtp-stats", **sample.as_dict()))

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
            if not self._detaching:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.conversation.close(reason)
        except TimeoutError:
            self._log.warning("conversation_close_timeout")
        self.playout.stop()
        if self.recording is not None:
            self.recording.close()
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


async def _already_started() -> None:
    """The adopted conversation of a reconnect is running already (issue 4)."""
