"""One browser call's lifecycle: the RTCPeerConnection, its timers, its grace period, its end.

A PeerSession owns everything a call has (peer connection, inbound pump task, outbound
PlayoutTrack, data channel, Conversation) and releases all of it in ``close()``, whichever side
ends the call. The parts live beside it: ``sdp`` checks the offer, ``inbound`` pumps the user's
audio and times turns, ``rtvi`` shapes the data-channel messages. What happens on the call is
published as typed events (``events``) to the observers registered on it (metrics, recording);
the session never calls them by hand and never imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from voicegate.audio.pcm import Int16Array
from voicegate.backends.base import Backend
from voicegate.call import rtvi
from voicegate.call.events import (
    CallClosing,
    CallConnected,
    CallEnded,
    CallInfo,
    CallObserver,
    CallStarted,
    Observers,
    RtpStats,
    TurnLatency,
    UserAudio,
)
from voicegate.call.inbound import InboundPump, TurnClock, TypedText, drain
from voicegate.call.sdp import answer, check_offer
from voicegate.conversation import (
    BotAudioStarted,
    BotText,
    BotTurnDone,
    Conversation,
    ConversationEvent,
    ConversationSettings,
    UserTranscript,
)
from voicegate.conversation.tools import ToolRegistry
from voicegate.media.playout import PlayoutTrack
from voicegate.media.rtp_stats import RTP_SAMPLE_INTERVAL, RtpSample, sample_every

__all__ = ["CLOSE_TIMEOUT", "PeerOptions", "PeerSession"]

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class PeerOptions:
    ice_servers: tuple[RTCIceServer, ...] = ()
    relay_only: bool = False
    max_call_seconds: float = 3600.0
    idle_timeout: float = 0.0
    """End the call after this long without speech either way (0: never)."""
    observers: tuple[CallObserver, ...] = ()
    """Who hears what the call does (the metrics; its recording when the operator
    enabled it and the call asked for it). See ``voicegate.call.events``."""
    reconnect_grace: float = 30.0
    """After the browser's connection drops, the conversation waits this long for the
    page to reconnect (``restart_pc``) before the call is freed."""
    connect_timeout: float = 15.0
    """A call whose media (ICE + DTLS) is not connected this long after the answer is closed:
    an offer that never connects must not hold a slot and a paid model stream."""
    info: CallInfo = CallInfo()
    """Who and what the call is, for the observers (``CallStarted.info``)."""
    stall_after: float = 5.0
    """No inbound audio for this long counts as a dropped connection (browsers send
    audio frames continuously; aiortc only notices a dead path after ~30 s of ICE consent)."""


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
        """``conversation``: one that survives from this call's previous connection (browser
        reconnect); it is already running and keeps its history."""
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
        self._connected = asyncio.Event()
        self.observers = Observers(pc_id, self.playout)
        for observer in options.observers:
            self.observers.add(observer)
        self.rtp: RtpSample | None = None  # the latest getStats() sample
        self._outbox = rtvi.Outbox(self._message_dropped, self._channel_overflow)
        self._rtvi = rtvi.Speaker(backend.name)
        self._typed = TypedText(self.conversation, self._text_refused, self._text_limited)
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = TurnClock()
        self.turn_latencies_ms: list[float] = []
        self._last_activity = time.monotonic()  # user speech or bot audio
        self.stats: dict[str, int] = {"frames_in": 0, "chunks_out": 0}
        self._log = log.bind(pc_id=pc_id)

    # -- signaling ---------------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Negotiate the call and start the conversation; both must succeed."""
        check_offer(offer.sdp)
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        # BackendError from the conversation's start propagates: the caller answers 502 and
        # closes us.
        desc = await answer(pc, offer, self.playout, self._start_conversation)
        self._spawn(self._watch_conversation())
        self._spawn(self._typed.run())
        self._spawn(self._connect_deadline())
        self._spawn(self._deadline())
        self._spawn(sample_every(self.pc, RTP_SAMPLE_INTERVAL, self._rtp_sampled))
        if self.options.idle_timeout > 0:
            self._spawn(self._idle_watch())
        self.observers.publish(CallStarted(restart=self._adopted, info=self.options.info))
        return desc

    async def _start_conversation(self) -> None:
        if not self._adopted:  # a reconnect's adopted conversation is running already
            await self.conversation.start()

    async def add_candidates(self, candidates: list[RTCIceCandidate]) -> None:
        for candidate in candidates:
            await self.pc.addIceCandidate(candidate)

    # -- media -------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            send, stall_after = self.conversation.send_audio, self.options.stall_after
            rate = self.conversation.input_rate
            pump = InboundPump(send, self, self._turns, stall_after, self.stats, rate)
            self._spawn(pump.run(track))
        else:
            # Always consume: aiortc queues received frames without bound (pipecat PR #2682).
            self._spawn(drain(track))

    # InboundListener: what the pump reports.

    def inbound_stalled(self) -> None:
        self._connection_lost("stalled")  # keep waiting: the grace runs

    def inbound_frame(self) -> None:
        if self._grace is not None:
            self._connection_back()

    def inbound_audio(self, pcm: Int16Array) -> None:
        if self.observers.want_audio:
            self.observers.publish_audio(UserAudio(pcm.tobytes()))

    def user_speech(self) -> None:
        self._last_activity = time.monotonic()

    def user_started_speaking(self) -> None:
        self.send_message(rtvi.message("user-started-speaking"))

    def user_stopped_speaking(self) -> None:
        self.send_message(rtvi.message("user-stopped-speaking"))

    def _bot_started(self, at: float) -> None:
        self.send_message(rtvi.message("bot-started-speaking"))
        self._rtvi.bot_started()
        measured = self._turns.bot_started(at)
        if measured is None:
            return
        total, model = measured
        self.turn_latencies_ms.append(total)
        self.observers.publish(TurnLatency(total / 1000, None if model is None else model / 1000))
        self.send_message(rtvi.turn_latency(total, model))
        self.send_message(rtvi.turn_metrics(self.backend_name, total, model))

    def _bot_stopped(self, interrupted: bool) -> None:
        self.send_message(rtvi.message("bot-stopped-speaking", {"interrupted": interrupted}))
        for text in self._rtvi.bot_stopped():
            self.send_message(text)

    # -- ConversationListener --------------------------------------------------------------

    def on_audio(self, pcm: bytes) -> None:
        self._last_activity = time.monotonic()
        self.playout.push(pcm)

    def on_flush(self) -> int:
        return self.playout.flush()

    def on_event(self, event: ConversationEvent) -> None:
        match event:
            case BotAudioStarted():
                self._turns.model_audio(event.at)
            case BotTurnDone():
                self.playout.mark_turn_done()
            case UserTranscript(final=True) | BotText(final=True):
                # The text is dropped from the line by logs.Redactor unless --log-transcripts.
                role = "user" if isinstance(event, UserTranscript) else "assistant"
                self._log.info("transcript", role=role, text=event.text)
        self.observers.publish(event)
        for text in self._rtvi.messages(event, self.pc_id):
            self.send_message(text)

    # -- data channel ----------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._outbox.channel is not None:
            return  # one channel per call; extra ones are ignored
        channel.on("message", self._on_message)
        self._outbox.attach(channel)

    def _on_message(self, raw: str | bytes) -> None:
        msg = rtvi.parse(raw)
        if msg is None:
            return
        kind, rid = msg["type"], rtvi.request_id(msg)
        if kind == "signalling":
            # small-webrtc-transport's trackStatus (a local track muted or not): voicegate keeps
            # reading the receiver either way, and the transport expects no answer.
            return
        if kind == "client-ready":
            self._rtvi.version = rtvi.negotiate(msg)
            self.send_message(rtvi.bot_ready(rid, self.backend_name, self._rtvi.version))
        elif kind == "disconnect-bot":
            self._spawn(self._disconnect_bot())
        elif self._closing:
            return
        elif kind == "send-text":
            try:
                self._typed.put(rtvi.send_text_content(msg), rid)
            except ValueError as exc:
                self._text_refused(str(exc), rid)
        elif kind == "append-to-context":
            self._append_to_context(msg, rid)
        elif kind == "client-message":
            self._client_message(msg, rid)
        else:
            self.send_message(rtvi.error_response(rid, f"unsupported message type {kind[:64]!r}"))

    async def _disconnect_bot(self) -> None:
        """Pipecat's server answers ``disconnect-bot`` by leaving: SmallWebRTC's ``peerLeft``
        makes the client disconnect itself, and then the call ends and frees its slot."""
        if self._closing:
            return
        self.send_message(rtvi.peer_left())
        await asyncio.sleep(0.2)  # let the message leave before the transport closes
        await self.close("client-disconnect")

    def _append_to_context(self, msg: dict[str, Any], rid: str | None) -> None:
        """``append-to-context``: user text is a typed turn (answered at once, as
        ``run_immediately`` asks); assistant text joins the history the model is given."""
        data = msg.get("data")
        role = data.get("role") if isinstance(data, dict) else None
        content = data.get("content") if isinstance(data, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, str):
            why = 'append-to-context needs data {"role": "user"|"assistant", "content": "<text>"}'
            self.send_message(rtvi.error_response(rid, why))
            return
        if not content.strip() or len(content) > rtvi.MAX_TEXT_CHARS:
            why = f"append-to-context content must be 1 to {rtvi.MAX_TEXT_CHARS} characters"
            self.send_message(rtvi.error_response(rid, why))
            return
        if role == "user":
            self._typed.put(content.strip(), rid)
        else:
            self.conversation.memory.remember("ASSISTANT", " ".join(content.split()))
        self.send_message(rtvi.message("append-to-context-result", {"ok": True}, rid))

    def _client_message(self, msg: dict[str, Any], rid: str | None) -> None:
        """A ``client-message`` request (client-js ``sendClientRequest``) always gets an answer:
        ``server-response`` for the ones of ``rtvi.CLIENT_MESSAGE_TYPES``, else
        ``error-response``."""
        data = msg.get("data")
        t = data.get("t") if isinstance(data, dict) else None
        d = data.get("d") if isinstance(data, dict) else None
        if t == "about":
            about = {
                "library": "voicegate",
                "backend": self.backend_name,
                "pc_id": self.pc_id,
                "version": self._rtvi.version,
                "client_messages": list(rtvi.CLIENT_MESSAGE_TYPES),
            }
            self.send_message(rtvi.server_response(rid, t, about))
        elif t == "ping":
            self.send_message(rtvi.server_response(rid, t, d))
        else:
            shown = t[:64] if isinstance(t, str) else t
            why = f"unknown client-message {shown!r}; known: {', '.join(rtvi.CLIENT_MESSAGE_TYPES)}"
            self.send_message(rtvi.error_response(rid, why))

    def _text_limited(self) -> None:
        self.conversation.stats.user_texts_rate_limited += 1

    def _text_refused(self, why: str, request_id: str | None) -> None:
        self.send_message(rtvi.error(why, False, "send_text", request_id))

    def send_message(self, text: str) -> None:
        self._outbox.send(text)

    def _message_dropped(self) -> None:
        self.conversation.stats.data_channel_messages_dropped += 1

    def _channel_overflow(self) -> None:
        """The browser has not read its data channel for long: a peer that will not."""
        self._log.warning("data_channel_overflow", dropped=self._outbox.dropped)
        self._spawn(self.close("data-channel-overflow"))

    @property
    def ever_connected(self) -> bool:
        """Whether this connection's media (ICE + DTLS) has connected at least once."""
        return self._connected.is_set()

    @property
    def messages_dropped(self) -> int:
        return self._outbox.dropped

    # -- lifetime ----------------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self._log.info("connection_state", state=state)
        if state == "connected" and not self._connected.is_set():
            self._connected.set()
            self.observers.publish(CallConnected(time.monotonic() - self.created))
        elif state == "closed":  # the browser closed its side: a deliberate end
            self._spawn(self.close(f"connection-{state}"))
        elif state == "failed":
            self._connection_lost(state)

    # -- browser reconnect -------------------------------------------------------------------

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

    async def _connect_deadline(self) -> None:
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await self._connected.wait()
        except TimeoutError:
            self._log.warning("connect_timeout", timeout_s=self.options.connect_timeout)
            await self.close("connect-timeout")

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

    def _rtp_sampled(self, sample: RtpSample) -> None:
        """aiortc's ``getStats()`` (loss, jitter, RTT from RTCP) every few seconds: to the
        observers and to the page's debug panel as a ``server-message`` of kind ``rtp-stats``."""
        self.rtp = sample
        self.observers.publish(RtpStats(sample))
        self.send_message(rtvi.rtp_stats(sample))

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
        self.observers.publish(CallClosing(reason))
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
        # In the same step as leaving the registry: a scrape never sees the call both live and
        # ended (its stats counted twice).
        seconds = time.monotonic() - self.created
        stats = self.conversation.stats
        self.observers.publish(CallEnded(reason, seconds, stats, handed_over=self._detaching))
        # Data-channel messages that gave way before the browser's channel opened: counted by
        # the outbox, reported once here so none is lost without a trace.
        tokens = stats.tokens
        self._log.info(
            "call_closed",
            reason=reason,
            seconds=round(seconds, 1),
            turns=stats.turns,
            messages_dropped=self._outbox.dropped,
            tokens_in_speech=tokens.input_speech,
            tokens_in_text=tokens.input_text,
            tokens_out_speech=tokens.output_speech,
            tokens_out_text=tokens.output_text,
        )
