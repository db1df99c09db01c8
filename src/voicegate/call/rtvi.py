"""Data-channel messages in Pipecat's RTVI shape, so RTVI client SDKs understand voicegate.

Every message is ``{"label": "rtvi-ai", "type": ..., "id": ..., "data": {...}}``. The full list,
with voicegate's additions, is documented in docs/protocol.md. This module owns the shapes (which
conversation event becomes which message, ``conversation_message``), the parsing of client
messages, and the ``Outbox`` that holds messages until the browser's channel opens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from aiortc.rtcdatachannel import RTCDataChannel

from voicegate.call.outqueue import ChannelQueue
from voicegate.conversation import (
    BotAudioStarted,
    BotInterrupted,
    BotText,
    BotTurnDone,
    ConversationError,
    ConversationEvent,
    SessionContinued,
    ToolCallFinished,
    ToolCallStarted,
    ToolFiller,
    Usage,
    UserTranscript,
)
from voicegate.media.rtp_stats import RtpSample

__all__ = [
    "LABEL",
    "MAX_PENDING_MESSAGES",
    "MAX_TEXT_CHARS",
    "MAX_CLIENT_MESSAGE_CHARS",
    "Outbox",
    "PROTOCOL_VERSION",
    "LEGACY_VERSION",
    "CLIENT_MESSAGE_TYPES",
    "Speaker",
    "error_response",
    "negotiate",
    "peer_left",
    "server_response",
    "bot_ready",
    "conversation_message",
    "error",
    "message",
    "parse",
    "request_id",
    "rtp_stats",
    "send_text_content",
    "server_message",
    "turn_latency",
    "turn_metrics",
    "user_transcription",
]

LABEL: Final = "rtvi-ai"
PROTOCOL_VERSION: Final = "2.1.0"
"""The RTVI protocol voicegate speaks to a client whose ``client-ready`` says 2.x (Pipecat's
client-js 1.13 sends 2.1.0 and warns about a bot older than 2)."""
LEGACY_VERSION: Final = "1.0.0"
"""What a client that says 1.x (or nothing) is answered: the messages it knew keep coming."""
CLIENT_MESSAGE_TYPES: Final = ("about", "ping")
"""The ``t`` of the ``client-message`` requests voicegate answers (``sendClientRequest``):
``about`` (the backend, the call, the protocol) and ``ping`` (its ``d`` back)."""
MAX_CLIENT_MESSAGE_CHARS: Final = 65536
"""Longest data-channel message read from the client (the SCTP message size Chromium offers);
anything longer is ignored, like other junk."""
MAX_TEXT_CHARS: Final = 2000
"""Longest typed text (``send-text`` content) passed on; Nova Sonic takes ~1 KB per text event
and the conversation splits longer ones, so this bounds what one message can ask of it."""
MAX_PENDING_MESSAGES: Final = 64
"""Data-channel messages kept while the channel is not open yet; older ones give way, counted."""


def message(type_: str, data: dict[str, Any] | None = None, id_: str | None = None) -> str:
    return json.dumps(
        {"label": LABEL, "type": type_, "id": id_ or uuid.uuid4().hex[:12], "data": data or {}},
        separators=(",", ":"),
    )


def negotiate(msg: dict[str, Any]) -> str:
    """The protocol version to speak after this ``client-ready``: 2.x for a client that says its
    major version is 2 or more, 1.0 for an older one or one that says nothing."""
    data = msg.get("data")
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, str) and len(version) <= 32:
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) >= 2:
            return PROTOCOL_VERSION
    return LEGACY_VERSION


def bot_ready(request_id: str | None, backend: str, version: str = LEGACY_VERSION) -> str:
    return message(
        "bot-ready",
        {"version": version, "about": {"library": "voicegate", "backend": backend}},
        request_id,
    )


def server_response(request_id: str | None, t: str, d: Any) -> str:
    """The answer to a ``client-message`` (client-js ``sendClientRequest`` resolves with ``d``)."""
    return message("server-response", {"t": t, "d": d}, request_id)


def error_response(request_id: str | None, text: str) -> str:
    """The refusal of a client request (client-js rejects the request's promise with it)."""
    return message("error-response", {"error": text}, request_id)


def peer_left() -> str:
    """SmallWebRTC's signalling message that the bot has left: small-webrtc-transport then calls
    ``onBotDisconnected`` and client-js disconnects (its ``disconnectOnBotDisconnect``)."""
    return json.dumps(
        {"type": "signalling", "message": {"type": "peerLeft"}}, separators=(",", ":")
    )


def user_transcription(text: str, final: bool, user_id: str) -> str:
    return message(
        "user-transcription",
        {
            "text": text,
            "final": final,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "user_id": user_id,
        },
    )


def error(text: str, fatal: bool, kind: str = "error", id_: str | None = None) -> str:
    """``error`` is what client-js reads; ``message`` and ``kind`` are voicegate's own."""
    return message("error", {"error": text, "message": text, "fatal": fatal, "kind": kind}, id_)


def server_message(kind: str, **fields: Any) -> str:
    return message("server-message", {"kind": kind, **fields})


def parse(raw: str | bytes) -> dict[str, Any] | None:
    """A client message, or None for anything that is not an RTVI JSON object (pings, junk)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None
    if len(raw) > MAX_CLIENT_MESSAGE_CHARS:
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return obj


def request_id(msg: dict[str, Any]) -> str | None:
    """The client's ``id`` of a request, echoed in the answer (only a string is echoed)."""
    value = msg.get("id")
    return value if isinstance(value, str) and len(value) <= 128 else None


def send_text_content(msg: dict[str, Any]) -> str:
    """The text of a ``send-text`` message (trimmed), or ``ValueError`` saying what is wrong.
    ``options.run_immediately`` and ``options.audio_response`` are accepted (booleans): the text
    always goes to the model at once, and Nova Sonic always answers in speech."""
    data = msg.get("data")
    if not isinstance(data, dict):
        raise ValueError('send-text needs "data": {"content": "<text>"}')
    content = data.get("content")
    if not isinstance(content, str):
        raise ValueError("send-text data.content must be a string")
    if len(content) > MAX_TEXT_CHARS:
        raise ValueError(f"send-text data.content is longer than {MAX_TEXT_CHARS} characters")
    text = content.strip()
    if not text:
        raise ValueError("send-text data.content is empty")
    options = data.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError("send-text data.options must be an object")
    for name in ("run_immediately", "audio_response"):
        if options.get(name) is not None and not isinstance(options[name], bool):
            raise ValueError(f"send-text data.options.{name} must be a boolean")
    return text


# -- conversation events -> messages -----------------------------------------------------------


def conversation_message(event: ConversationEvent, user_id: str) -> str | None:
    """The message a conversation event becomes on the data channel (None: not shown)."""
    match event:
        case UserTranscript():
            return user_transcription(event.text, event.final, user_id)
        case BotText():
            return message(
                "bot-transcription" if event.final else "bot-llm-text", {"text": event.text}
            )
        case BotInterrupted():
            return message("bot-interrupted", {"dropped_ms": event.dropped_samples / 24})
        case ToolCallStarted():
            return message(
                "llm-function-call",
                {
                    "function_name": event.name,
                    "tool_call_id": event.tool_use_id,
                    "args": _json_or_text(event.arguments),
                },
            )
        case ToolFiller():
            return server_message(
                "tool-filler",
                function_name=event.name,
                tool_call_id=event.tool_use_id,
                text=event.text,
            )
        case ToolCallFinished():
            return server_message(
                "tool-result",
                function_name=event.name,
                tool_call_id=event.tool_use_id,
                ok=event.ok,
                result=_json_or_text(event.result),
            )
        case Usage():
            return message(
                "metrics",
                {
                    "usage": {
                        "input_tokens": event.input_tokens,
                        "output_tokens": event.output_tokens,
                        "total_tokens": event.total_tokens,
                        # The call's totals by modality (summed deltas, across model streams).
                        "input_speech_tokens": event.split.input_speech,
                        "input_text_tokens": event.split.input_text,
                        "output_speech_tokens": event.split.output_speech,
                        "output_text_tokens": event.split.output_text,
                    },
                    # Pipecat's shape: what this model event added.
                    "tokens": [
                        {
                            "processor": "model",
                            "prompt_tokens": event.delta.input_speech + event.delta.input_text,
                            "completion_tokens": event.delta.output_speech
                            + event.delta.output_text,
                            "total_tokens": event.delta.input_speech
                            + event.delta.input_text
                            + event.delta.output_speech
                            + event.delta.output_text,
                        }
                    ],
                },
            )
        case ConversationError():
            return error(event.message, event.fatal, event.kind)
        case SessionContinued():  # renewal/recovery: for the debug panel, never an error
            return server_message(
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
        case _:  # BotAudioStarted, BotTurnDone, ConversationEnded: the call's own business
            return None


def turn_latency(total_ms: float, model_ms: float | None) -> str:
    return server_message(
        "turn-latency",
        total_ms=round(total_ms, 1),
        model_ms=None if model_ms is None else round(model_ms, 1),
        playout_ms=None if model_ms is None else round(total_ms - model_ms, 1),
    )


def turn_metrics(processor: str, total_ms: float, model_ms: float | None) -> str:
    """A turn's latency in Pipecat's ``metrics`` shape (seconds): ``ttfb`` is the model's time
    from the end of the user's turn to its first audio, ``processing`` the whole way to the
    bot's audio playing; ``turn_latency`` keeps voicegate's milliseconds alongside."""
    data: dict[str, Any] = {
        "processing": [{"processor": "voicegate", "value": round(total_ms / 1000, 4)}],
        "turn_latency": {"total_ms": round(total_ms, 1)},
    }
    if model_ms is not None:
        data["ttfb"] = [{"processor": processor, "value": round(model_ms / 1000, 4)}]
        data["turn_latency"]["model_ms"] = round(model_ms, 1)
    return message("metrics", data)


def rtp_stats(sample: RtpSample) -> str:
    return server_message("rtp-stats", **sample.as_dict())


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


class Speaker:
    """One call's side of the protocol: the version negotiated by ``client-ready`` and the
    bot's LLM and TTS phases of the current turn (each ``*-started`` gets its ``*-stopped``).
    A 1.x client gets exactly the messages it always got; a 2.x client gets Pipecat's current
    ones (``bot-output``, ``bot-llm-*``, ``bot-tts-*``, the ``llm-function-call-*`` triple) as
    well as the ones voicegate's page reads.

    A turn ends when the bot stops speaking (the model's turn is done and its audio has played
    out) or is interrupted: the model's final text of a block often comes after it reports the
    turn done, so ``BotTurnDone`` alone closes only a turn that had no audio."""

    def __init__(self, processor: str) -> None:
        self.processor = processor  # the backend, named in metrics
        self.version: str = LEGACY_VERSION
        self._llm = False
        self._tts = False
        self._speaking = False

    @property
    def current(self) -> bool:
        return self.version != LEGACY_VERSION

    def bot_started(self) -> None:
        self._speaking = True

    def bot_stopped(self) -> list[str]:
        """The bot's audio stopped (played out or interrupted): the turn's closing messages."""
        self._speaking = False
        out: list[str] = []
        if self.current:
            self._close(out)
        return out

    def messages(self, event: ConversationEvent, user_id: str) -> list[str]:
        legacy = conversation_message(event, user_id)
        if not self.current:
            return [] if legacy is None else [legacy]
        out: list[str] = []
        match event:
            case BotText():
                # A final text with no turn open (it came after the audio played out) is
                # wrapped in a phase of its own.
                late = event.final and not self._llm and not self._speaking
                self._open_llm(out)
                if event.final:
                    self._open_tts(out)
                    out.append(message("bot-tts-text", {"text": event.text}))
                    out.append(
                        message(
                            "bot-output",
                            {"text": event.text, "spoken": True, "aggregated_by": "sentence"},
                        )
                    )
                out.append(legacy or "")
                if event.final:
                    spoken = [{"processor": self.processor, "value": len(event.text)}]
                    out.append(message("metrics", {"characters": spoken}))
                    if late:
                        self._close(out)
            case BotAudioStarted():
                self._open_llm(out)
                self._open_tts(out)
            case BotTurnDone():
                if not self._tts:  # no audio to play out: nothing else will close the turn
                    self._close(out)
            case BotInterrupted():
                self._close(out)
                out.append(legacy or "")
            case ToolCallStarted():
                self._open_llm(out)
                out.append(message("llm-function-call-started", {"function_name": event.name}))
                out.append(
                    message(
                        "llm-function-call-in-progress",
                        {
                            "function_name": event.name,
                            "tool_call_id": event.tool_use_id,
                            "arguments": _json_or_text(event.arguments),
                        },
                    )
                )
            case ToolCallFinished():
                out.append(
                    message(
                        "llm-function-call-stopped",
                        {
                            "function_name": event.name,
                            "tool_call_id": event.tool_use_id,
                            "cancelled": False,
                            "result": _json_or_text(event.result),
                        },
                    )
                )
                out.append(legacy or "")
            case _:
                if legacy is not None:
                    out.append(legacy)
        return [m for m in out if m]

    def _open_llm(self, out: list[str]) -> None:
        if not self._llm:
            self._llm = True
            out.append(message("bot-llm-started"))

    def _open_tts(self, out: list[str]) -> None:
        if not self._tts:
            self._tts = True
            out.append(message("bot-tts-started"))

    def _close(self, out: list[str]) -> None:
        if self._tts:
            self._tts = False
            out.append(message("bot-tts-stopped"))
        if self._llm:
            self._llm = False
            out.append(message("bot-llm-stopped"))


# -- the outbox --------------------------------------------------------------------------------


class Outbox:
    """Messages for one call's data channel. Until the browser's channel opens (it is created by
    the browser, so it may come after the first events) they wait, at most
    ``MAX_PENDING_MESSAGES``; older ones give way and are counted in ``dropped``."""

    def __init__(
        self,
        on_drop: Callable[[], None] = lambda: None,
        on_overflow: Callable[[], None] = lambda: None,
    ) -> None:
        self.channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_MESSAGES)
        self.dropped = 0
        self._on_drop = on_drop
        self._on_overflow = on_overflow
        self._queue: ChannelQueue | None = None  # once attached: bounded (call.outqueue)

    def _dropped_one(self) -> None:
        self.dropped += 1
        self._on_drop()

    def attach(self, channel: RTCDataChannel) -> bool:
        """Use ``channel`` from now on; False (ignored) when the call has one already."""
        if self.channel is not None:
            return False
        self.channel = channel
        self._queue = ChannelQueue(channel, self._dropped_one, self._on_overflow)
        channel.on("open", self.flush)
        if channel.readyState == "open":
            self.flush()
        return True

    def flush(self) -> None:
        channel = self.channel
        while self._pending and self._queue is not None and channel is not None:
            if channel.readyState != "open":
                break
            self._queue.send(self._pending.popleft())

    def send(self, text: str) -> None:
        channel = self.channel
        if self._queue is not None and channel is not None and channel.readyState == "open":
            self._queue.send(text)
            return
        if len(self._pending) == self._pending.maxlen:
            self._dropped_one()
        self._pending.append(text)
