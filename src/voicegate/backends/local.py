"""The embedded offline brain: a simulated Nova Sonic session built from local speech models.

Silero VAD decides turns, Whisper tiny.en transcribes them, a small rule-based policy picks the
reply (a greeting, the time through a real ``get_current_time`` tool call, a goodbye, or a quote
of what it heard) and hibari speaks it. The output events follow Nova Sonic's order, so the layer
above cannot tell this brain from Bedrock:

    completionStart, USER text FINAL, [TOOL toolUse ... wait for the toolResult],
    ASSISTANT text SPECULATIVE, AUDIO (24 kHz chunks), ASSISTANT text FINAL,
    usageEvent, completionEnd

Typed text (interactive USER text, Nova 2's cross-modal input) is a turn without speech
recognition: the same reply policy, spoken the same way. A greeting instruction ("greet the
caller ...", sent by ``--greeting``) is a greeting by that policy.

Barge-in: the VAD keeps listening while the bot talks. Speech that starts while a reply is being
generated, or while its audio is still playing at the browser (audio is produced faster than
real time, so "playing" is judged from wall time since the first chunk), cancels the reply and
emits Nova's interruption signals. This relies on the browser's echo cancellation; webrtcvad is
never used here because it flags noise as speech.

Models are loaded once per process and shared by every call. ASR runs in worker threads behind a
process-wide gate (a decode uses both cores for ~300 ms); VAD (~50 us a frame) runs inline.
Whisper starts speculatively ~200 ms into a pause (``speech/speculate.py``), so by the time the
hangover confirms the end the transcript is usually ready; if the user speaks on, the guess is
discarded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import numpy as np
import structlog
from numpy.typing import NDArray

from voicegate.audio.resample import PcmResampler
from voicegate.backends.base import BackendError
from voicegate.backends.inprocess import InProcessStream
from voicegate.backends.speech import SpeechModelError, check_installed
from voicegate.backends.speech.models import (
    SpeechModels,
    available_cpus,
    decode_gate,
    load_models,
    run_gated,
)
from voicegate.backends.speech.policy import (
    KNOWLEDGE_TOOL,
    REPLIES,
    TIME_TOOL,
    intent,
    is_question,
    knowledge_reply,
    late_result_reply,
    quote_reply,
    time_reply,
)
from voicegate.backends.speech.speculate import Decoded, Speculator
from voicegate.backends.speech.vad import (
    SAMPLE_RATE,
    SpeechEnd,
    SpeechPause,
    SpeechStart,
    VadConfig,
    VadStream,
)
from voicegate.sonic import Role, StopReason, UsageEvent, filler_of, late_result_of
from voicegate.sonic.events import INPUT_SAMPLE_RATE

__all__ = [
    "CHUNK_MS",
    "Clock",
    "LocalBackend",
    "LocalModelUnavailable",
    "LocalStream",
    "MAX_SEGMENT_SAMPLES",
    "MAX_STATS",
    "MAX_UNCLAIMED_RESULTS",
    "TIME_TOOL",
    "TOOL_RESULT_TIMEOUT",
    "TurnStats",
]

log = structlog.get_logger(__name__)

Clock = Callable[[], float]

CHUNK_MS: Final = 160
"""Audio is emitted in 160 ms pieces: small enough to stop promptly, few enough to be cheap."""
TOOL_RESULT_TIMEOUT: Final = 15.0
"""Longer than the tool registry's own 10 s limit, so a slow tool yields its error result."""
MAX_SEGMENT_SAMPLES: Final = 28 * SAMPLE_RATE
MAX_STATS: Final = 64
MAX_UNCLAIMED_RESULTS: Final = 16


class LocalModelUnavailable(BackendError):
    """The offline models cannot be loaded; the message says what to install."""

    kind = "local_model_unavailable"


# ---------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnStats:
    """What one turn cost; kept on the stream for tests and benchmarks."""

    transcript: str = ""
    reply: str = ""
    asr_ms: float = 0.0
    latency_ms: float | None = None
    """From the last voiced input frame to the first reply audio chunk (real-time input)."""
    audio_seconds: float = 0.0
    interrupted: bool = False
    speculative: bool = False
    """The transcript came from a decode started before the end was confirmed."""


@dataclass(slots=True)
class _Turn:
    audio: NDArray[np.float32]
    speech_ended_at: float
    stats: TurnStats = field(default_factory=TurnStats)
    decoding: asyncio.Task[Decoded] | None = None  # a speculative decode of exactly this audio
    task: asyncio.Task[None] | None = None
    replying: bool = False  # the USER transcript is out: a barge-in now interrupts
    audio_cid: str | None = None  # the open AUDIO content, if any
    filler: asyncio.Task[None] | None = None  # a slow tool's filler being said (one a turn)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class LocalStream(InProcessStream):
    """One simulated Nova Sonic session of the embedded brain."""

    def __init__(
        self,
        models: SpeechModels,
        gate: asyncio.Semaphore,
        *,
        vad_config: VadConfig | None = None,
        clock: Clock = time.monotonic,
        tool_timeout: float = TOOL_RESULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self._models = models
        self._gate = gate
        self._vad = VadStream(models.vad, vad_config)
        self._to_16k: PcmResampler | None = None
        self.speculation = Speculator(gate, models.asr.transcribe)
        self._clock = clock
        self._tool_timeout = tool_timeout
        self._turn: _Turn | None = None
        self._carry: NDArray[np.float32] | None = None
        self._playing_until = 0.0
        self._tool_waits: dict[str, asyncio.Future[str]] = {}
        self._unclaimed: dict[str, str] = {}
        self._words_in = 0
        self._words_out = 0
        self.stats: deque[TurnStats] = deque(maxlen=MAX_STATS)
        self.segments = 0
        """Speech segments the VAD has ended (turns started)."""
        self.interruptions = 0

    # -- hooks ----------------------------------------------------------------------------

    async def on_audio(self, pcm: bytes) -> None:
        if self.input_rate != INPUT_SAMPLE_RATE:
            # A client streaming 8 or 24 kHz (the stand-in's local brain behind
            # --model-input-rate): the VAD and ASR take 16 kHz.
            if self._to_16k is None or self._to_16k.src != self.input_rate:
                self._to_16k = PcmResampler(self.input_rate, INPUT_SAMPLE_RATE)
            pcm = self._to_16k.process(pcm)
        for event in self._vad.feed(pcm):
            if isinstance(event, SpeechStart):
                await self._speech_started()
            elif isinstance(event, SpeechPause):
                self.speculation.offer(event.voiced_until, self._with_carry(event.audio))
            else:
                self._speech_ended(event)

    async def on_text(self, role: Role, text: str, interactive: bool) -> None:
        """Typed text: answered like a spoken turn, interrupting one under way."""
        text = text.strip()
        if role != "USER" or not interactive or not self.audio_started or not text:
            return
        filler = filler_of(text)
        if filler is not None:
            # A slow tool's filler: said while the turn waits for the tool, not a new turn.
            turn = self._turn
            if turn is not None and turn.running and turn.filler is None and self._tool_waits:
                turn.filler = self.spawn(self._speak(turn, filler, "PARTIAL_TURN"))
            return
        turn = self._turn
        if turn is not None and turn.running:
            self._cancel_turn()
            if turn.replying:
                turn.stats.interrupted = True
                await self._interrupt(turn.audio_cid, "generation")
        elif self._clock() < self._playing_until:
            await self._interrupt(None, "playback")
        typed = _Turn(np.zeros(0, dtype=np.float32), self._clock())
        self._turn = typed
        typed.task = self.spawn(self._run_turn(typed, text))

    async def on_tool_result(self, tool_use_id: str, content: str) -> None:
        waiter = self._tool_waits.pop(tool_use_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(content)
        elif waiter is None and len(self._unclaimed) < MAX_UNCLAIMED_RESULTS:
            # A result for a turn already interrupted, or one that outran its waiter.
            self._unclaimed[tool_use_id] = content

    async def on_session_end(self) -> None:
        self._cancel_turn()
        self.speculation.cancel()

    async def on_close(self) -> None:
        self._cancel_turn()
        self.speculation.cancel()

    async def idle(self) -> None:
        """Wait until the brain has finished the turn it is working on (tests, benchmarks)."""
        while (turn := self._turn) is not None and turn.task is not None and not turn.task.done():
            await asyncio.wait({turn.task})

    # -- turn taking ------------------------------------------------------------------------

    def _cancel_turn(self) -> _Turn | None:
        turn, self._turn = self._turn, None
        if turn is not None and turn.task is not None:
            turn.task.cancel()
        if turn is not None and turn.filler is not None:
            turn.filler.cancel()
        return turn

    async def _speech_started(self) -> None:
        turn = self._turn
        if turn is not None and turn.running:
            self._cancel_turn()
            if not turn.replying:
                # Still transcribing and nothing said yet: the user only paused. Hear the whole
                # utterance as one turn rather than answer half of it.
                self._carry = turn.audio
                log.debug("turn_merged_with_next_speech")
                return
            turn.stats.interrupted = True
            await self._interrupt(turn.audio_cid, "generation")
        elif self._clock() < self._playing_until:
            if turn is not None:
                turn.stats.interrupted = True
            await self._interrupt(None, "playback")

    async def _interrupt(self, audio_cid: str | None, during: str) -> None:
        self._playing_until = 0.0
        self.interruptions += 1
        log.info("barge_in", during=during)
        await self.emit_interrupted(audio_cid)
        await self.end_completion("INTERRUPTED")

    def _with_carry(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        """The segment with the start of an utterance the user paused in, if any."""
        if self._carry is None:
            return audio
        return np.concatenate([self._carry, audio])[-MAX_SEGMENT_SAMPLES:]

    def _speech_ended(self, event: SpeechEnd) -> None:
        self.segments += 1
        audio = self._with_carry(event.audio)
        self._carry = None
        self._cancel_turn()  # never two turns at once (a start always cancelled it already)
        # Input arrives in real time, so speech really ended trailing_samples ago.
        ended = self._clock() - event.trailing_samples / SAMPLE_RATE
        turn = _Turn(audio, ended, decoding=self.speculation.claim(event.voiced_until, audio))
        self._turn = turn
        turn.task = self.spawn(self._run_turn(turn))

    async def _run_turn(self, turn: _Turn, typed: str | None = None) -> None:
        stats = turn.stats
        if turn.decoding is not None:
            text, stats.asr_ms = await turn.decoding
            stats.speculative = True
        elif typed is None:
            started = time.perf_counter()
            text = await run_gated(self._gate, self._models.asr.transcribe, turn.audio)
            stats.asr_ms = (time.perf_counter() - started) * 1000
        else:
            text = typed
        stats.transcript = text
        self.stats.append(stats)
        if not any(ch.isalnum() for ch in text):
            log.info("turn_empty", asr_ms=round(stats.asr_ms))
            return  # nothing was said: no turn (an empty USER text confuses clients)
        turn.replying = True
        if typed is None:  # typed text is the client's own; only speech gets a transcript
            await self.emit_text("USER", text, "FINAL")
        reply = await self._decide(text)
        if turn.filler is not None:
            await turn.filler  # one audio content at a time: the filler first
        stats.reply = reply
        await self._speak(turn, reply)
        await self.emit(self._usage(text, reply))
        await self.end_completion("END_TURN")
        log.info(
            "turn_done",
            asr_ms=round(stats.asr_ms),
            latency_ms=None if stats.latency_ms is None else round(stats.latency_ms),
            audio_s=round(stats.audio_seconds, 2),
        )

    async def _decide(self, transcript: str) -> str:
        late = late_result_of(transcript)
        if late is not None:
            return late_result_reply(*late)
        kind = intent(transcript)
        if kind == "time":
            if TIME_TOOL not in self.tools:
                return REPLIES["no_clock"]
            return await self._ask_clock()
        if kind in REPLIES:
            return REPLIES[kind]
        if KNOWLEDGE_TOOL in self.tools and is_question(transcript):
            found = await self._ask_tool(KNOWLEDGE_TOOL, {"query": transcript})
            answer = None if found is None else knowledge_reply(found)
            if answer is not None:
                return answer
        return quote_reply(transcript)

    async def _ask_clock(self) -> str:
        result = await self._ask_tool(TIME_TOOL, {})
        return REPLIES["tool_timeout"] if result is None else time_reply(result)

    async def _ask_tool(self, name: str, arguments: dict[str, str]) -> str | None:
        """Issue a toolUse and wait for its result (None when it does not come in time)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tool_use_id = await self.emit_tool_use(name, arguments)
        early = self._unclaimed.pop(tool_use_id, None)
        if early is not None:
            return early
        self._tool_waits[tool_use_id] = waiter
        try:
            async with asyncio.timeout(self._tool_timeout):
                return await waiter
        except TimeoutError:
            log.warning("tool_result_timeout", tool=name, timeout=self._tool_timeout)
            return None
        finally:
            self._tool_waits.pop(tool_use_id, None)

    async def _speak(self, turn: _Turn, text: str, stop_reason: StopReason = "END_TURN") -> None:
        stats = turn.stats
        tts = self._models.tts
        rate = self.output_rate
        chunk_bytes = rate * CHUNK_MS // 1000 * 2
        await self.emit_text("ASSISTANT", text, "SPECULATIVE")
        turn.audio_cid = await self.begin_audio()
        first_at: float | None = None
        for i, sentence in enumerate(tts.sentences(text)):
            pcm = await asyncio.to_thread(tts.synthesize, sentence, rate, first=i == 0)
            for offset in range(0, len(pcm), chunk_bytes):
                chunk = pcm[offset : offset + chunk_bytes]
                if first_at is None:
                    first_at = self._clock()
                    stats.latency_ms = (first_at - turn.speech_ended_at) * 1000
                await self.emit_audio(turn.audio_cid, chunk)
                stats.audio_seconds += len(chunk) / 2 / rate
                # The browser plays it in real time from the first chunk on.
                self._playing_until = first_at + stats.audio_seconds
        await self.end_audio(turn.audio_cid, stop_reason)
        turn.audio_cid = None
        await self.emit_text("ASSISTANT", text, "FINAL")

    def _usage(self, heard: str, said: str) -> UsageEvent:
        """Nova reports tokens; this brain honestly counts words, and says so."""
        words_in, words_out = len(heard.split()), len(said.split())
        self._words_in += words_in
        self._words_out += words_out
        total_in, total_out = self._words_in, self._words_out
        details = {
            "unit": "words",
            "delta": {
                "input": {"speechTokens": words_in, "textTokens": 0},
                "output": {"speechTokens": words_out, "textTokens": words_out},
            },
            "total": {
                "input": {"speechTokens": total_in, "textTokens": 0},
                "output": {"speechTokens": total_out, "textTokens": total_out},
            },
        }
        return UsageEvent(total_in, total_out, total_in + total_out, details, self.ids)


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class LocalBackend:
    """Factory of :class:`LocalStream`; one per process, models shared by every call."""

    name = "local"
    input_rate = INPUT_SAMPLE_RATE  # what its VAD and ASR take, whatever --model-input-rate says

    def __init__(
        self,
        *,
        max_concurrent_decodes: int | None = None,
        vad_config: VadConfig | None = None,
        clock: Clock = time.monotonic,
        tool_timeout: float = TOOL_RESULT_TIMEOUT,
    ) -> None:
        """Cheap: checks that the extra is installed; models load in ``warm``/first ``open``.

        Raises ``BackendUnavailable`` when a package is missing, so ``--backend auto`` can fall
        back to echo and ``--backend local`` can say what to install.
        """
        try:
            check_installed()
        except SpeechModelError as exc:
            from voicegate.backends.base import BackendUnavailable

            raise BackendUnavailable(str(exc)) from exc
        # A decode uses two threads; more decodes than core pairs only slows all of them.
        cores = len(available_cpus())
        self._limit = max_concurrent_decodes or max(1, cores // 2)
        self._vad_config = vad_config
        self._clock = clock
        self._tool_timeout = tool_timeout
        self._models: SpeechModels | None = None

    @property
    def models(self) -> SpeechModels | None:
        return self._models

    @property
    def decode_limit(self) -> int:
        """Concurrent ASR decodes this backend's streams share (the size of their gate)."""
        return self._limit

    async def warm(self) -> SpeechModels:
        """Load the models now (at start-up) instead of on the first call."""
        if self._models is None:
            try:
                self._models = await asyncio.to_thread(load_models)
            except SpeechModelError as exc:
                raise LocalModelUnavailable(str(exc)) from exc
        return self._models

    async def open(self) -> LocalStream:
        models = await self.warm()
        return LocalStream(
            models,
            decode_gate(self.decode_limit),
            vad_config=self._vad_config,
            clock=self._clock,
            tool_timeout=self._tool_timeout,
        )

    def credentials_expiration(self) -> datetime | None:
        return None  # offline: no credentials

    async def aclose(self) -> None:
        # The models are process-wide and may serve another backend instance: keep them.
        self._models = None
