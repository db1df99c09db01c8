"""The brains behind the stand-in: what "the model" says on a Bedrock-shaped stream.

Each brain is an ``InProcessStream`` (which already checks Nova Sonic's session grammar the way
Bedrock does); the server only moves its events over the wire. Three kinds:

* ``scripted``: deterministic scenarios for tests, chosen per session by the client through the
  system prompt (``scenario:<name>``), because the system prompt is the one knob every client,
  including the real SDK driven by production code, already controls.
* ``echo``: every user audio chunk comes straight back as assistant audio, with zero think time,
  so latency benchmarks measure the transport and nothing else.
* ``local``: the embedded offline brain (``voicegate.backends.local``), imported lazily because
  it pulls in speech models.

Turn-taking in ``scripted`` uses plain RMS energy counted in *audio time* (samples received),
never wall-clock time, so tests are deterministic however slow the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Protocol

import numpy as np

from voicegate.backends.base import (
    BackendError,
    InternalServerError,
    ModelStreamError,
    ModelTimeout,
    ServiceUnavailable,
    Throttled,
    ValidationFailed,
)
from voicegate.backends.inprocess import InProcessStream
from voicegate.media.levels import rms
from voicegate.media.resample import LinearResampler
from voicegate.sonic import (
    AudioContentStart,
    ContentEnd,
    InputEvent,
    UsageEvent,
)


class ResetStream(BackendError):
    """Raised by a brain to make the server reset the HTTP/2 stream (RST_STREAM) mid-call."""

    kind = "reset"


class BrainUnavailable(RuntimeError):
    """The requested brain cannot run here (e.g. the local brain is not installed)."""


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

SCENARIO_RE: Final = re.compile(r"scenario:([a-z_]+(?::[A-Za-z0-9_.\-]+)*)")

EXCEPTIONS: Final[dict[str, tuple[type[BackendError], str]]] = {
    "validation": (
        ValidationFailed,
        "Invalid input request, please fix your input and try again.",
    ),
    "throttling": (Throttled, "Too many requests, please wait before trying again."),
    "model_timeout": (
        ModelTimeout,
        "Model has timed out in processing the request. Try your request again.",
    ),
    "internal_server": (
        InternalServerError,
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "service_unavailable": (
        ServiceUnavailable,
        "The service is temporarily unable to handle the request. Try again later.",
    ),
    "model_stream_error": (
        ModelStreamError,
        "An error occurred while streaming the response. Retry your request.",
    ),
}
"""Scenario ``exception:<kind>`` -> the error the brain raises and Bedrock's message for it."""

SCENARIOS: Final = frozenset({"reply", "barge_in", "tool", "reset", "exception", "silent"})
DEFAULT_EXCEPTION_AFTER: Final = 3
"""Audio chunks received before an ``exception:<kind>`` scenario raises."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed ``scenario:<name>[:<arg>...]``; ``greet`` replies as soon as audio starts."""

    name: str = "reply"
    greet: bool = False
    tool: str | None = None
    exception: str | None = None
    after_chunks: int = DEFAULT_EXCEPTION_AFTER
    once: bool = False
    """Fail (reset, exception) only in a session without replayed history or re-sent user
    text, i.e. the first stream of a call: the recovered stream then carries on."""
    reset: bool = False
    """``tool`` scenario: reset the stream right after the toolUse, before its result."""

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """Parse ``reply``, ``reply:greet``, ``tool:calculate``, ``exception:throttling:5``..."""
        name, *args = spec.split(":")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (one of {sorted(SCENARIOS)})")
        greet = "greet" in args
        once = "once" in args
        reset = name == "tool" and "reset" in args
        args = [a for a in args if a not in ("greet", "once") and not (reset and a == "reset")]
        if name == "exception":
            if not args or args[0] not in EXCEPTIONS:
                raise ValueError(f"exception scenario needs one of {sorted(EXCEPTIONS)}")
            after = int(args[1]) if len(args) > 1 else DEFAULT_EXCEPTION_AFTER
            if after < 0:
                raise ValueError("exception scenario chunk count must be >= 0")
            return cls(name, greet, exception=args[0], after_chunks=after, once=once)
        if name == "tool":
            return cls(name, greet, tool=args[0] if args else None, once=once, reset=reset)
        if args:
            raise ValueError(f"scenario {name!r} takes no arguments besides greet and once")
        return cls(name, greet, once=once)

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.exception:
            parts += [self.exception, str(self.after_chunks)]
        if self.tool:
            parts.append(self.tool)
        if self.reset:
            parts.append("reset")
        if self.greet:
            parts.append("greet")
        if self.once:
            parts.append("once")
        return ":".join(parts)


def scenario_from_prompt(system_prompt: str, default: Scenario) -> Scenario:
    """The scenario named in the system prompt (``scenario:<spec>``), else ``default``."""
    match = SCENARIO_RE.search(system_prompt)
    if match is None:
        return default
    return Scenario.parse(match.group(1))


# --------------------------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------------------------

SPEECH_RMS: Final = 300.0
"""RMS (16-bit scale, about -40 dBFS) above which a chunk counts as speech."""
SPEECH_START_S: Final = 0.06
"""Voiced audio needed to start a user turn (or to barge in)."""
TURN_END_SILENCE_S: Final = 0.3
"""Quiet audio that ends a user turn."""
REPLY_SECONDS: Final = 1.0
LONG_REPLY_SECONDS: Final = 10.0
BARGE_IN_HEAD_START_S: Final = 0.5
"""How far a paced (barge-in scenario) reply runs ahead of the user's audio clock."""
OUT_CHUNK_S: Final = 0.04
TOOL_RESULT_TIMEOUT_S: Final = 60.0
MAX_PENDING_TURNS: Final = 4


@lru_cache(maxsize=8)
def speech_like(rate: int, seconds: float) -> bytes:
    """A voiced-sounding signal (harmonics of a gliding pitch, syllable envelope), s16le."""
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 - 0.5 * np.cos(2 * math.pi * 4.0 * t)  # ~4 syllables per second
    out = 0.25 * 32767 * wave * envelope / 1.5
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def _chunks(audio: bytes, rate: int) -> list[bytes]:
    step = 2 * int(rate * OUT_CHUNK_S)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


# --------------------------------------------------------------------------------------------
# Brains
# --------------------------------------------------------------------------------------------

TOOL_ARGUMENTS: Final[dict[str, dict[str, Any]]] = {
    "get_current_time": {"timezone": "UTC"},
    "calculate": {"expression": "6 * 7"},
}


class ScriptedBrain(InProcessStream):
    """Scenario-driven replies for tests (see docs/standin.md for the catalogue)."""

    def __init__(self, default: Scenario | None = None) -> None:
        super().__init__()
        self.scenario = default or Scenario()
        self.turns = 0
        self.audio_chunks = 0
        self._in_rate = 16000
        self._voiced_s = 0.0
        self._quiet_s = 0.0
        self._turn_s = 0.0
        self._in_turn = False
        self._input_s = 0.0  # audio clock: seconds of user audio received
        self._clock = asyncio.Event()
        self._speaking = False
        self._interrupt = asyncio.Event()
        self._turn_queue: asyncio.Queue[float] = asyncio.Queue(MAX_PENDING_TURNS)
        self._tool_results: dict[str, asyncio.Future[str]] = {}
        self._usage_in = 0
        self._usage_out = 0

    async def send(self, event: InputEvent) -> None:
        if isinstance(event, AudioContentStart):
            self._in_rate = event.sample_rate
        await super().send(event)

    async def on_audio_start(self) -> None:
        try:
            self.scenario = scenario_from_prompt(self.system_prompt, self.scenario)
        except ValueError as exc:
            raise ValidationFailed(f"stand-in: {exc}") from exc
        first_chunk = self.scenario.after_chunks == 0
        if self.scenario.name == "exception" and first_chunk and self._may_fail():
            await self._raise_scenario_exception()
            return
        self.spawn(self._worker())
        if self.scenario.greet:
            self._queue_turn(0.0)

    async def on_audio(self, pcm: bytes) -> None:
        self.audio_chunks += 1
        seconds = len(pcm) / 2 / self._in_rate
        self._input_s += seconds
        self._clock.set()
        if self.scenario.name == "exception":
            if self.audio_chunks >= self.scenario.after_chunks and self._may_fail():
                await self._raise_scenario_exception()
            return
        voiced = rms(pcm) >= SPEECH_RMS
        if voiced:
            self._voiced_s += seconds
            self._quiet_s = 0.0
        else:
            self._voiced_s = 0.0
            self._quiet_s += seconds
        if self._speaking and self._voiced_s >= SPEECH_START_S and self.scenario.name == "barge_in":
            self._interrupt.set()
        if not self._in_turn:
            if self._voiced_s >= SPEECH_START_S:
                self._in_turn = True
                self._turn_s = self._voiced_s
            return
        self._turn_s += seconds
        if self._quiet_s >= TURN_END_SILENCE_S:
            self._in_turn = False
            self._queue_turn(self._turn_s - self._quiet_s)

    async def on_tool_result(self, tool_use_id: str, content: str) -> None:
        future = self._tool_results.pop(tool_use_id, None)
        if future is None:
            raise ValidationFailed("Tool Response parsing error: unknown toolUseId")
        if not future.done():
            future.set_result(content)

    async def on_close(self) -> None:
        for future in self._tool_results.values():
            future.cancel()

    def _may_fail(self) -> bool:
        return not (self.scenario.once and (self.history or self.user_texts))

    async def _raise_scenario_exception(self) -> None:
        assert self.scenario.exception is not None
        cls, message = EXCEPTIONS[self.scenario.exception]
        await self.fail(cls(message))

    def _queue_turn(self, speech_s: float) -> None:
        # A user who talks faster than the script answers loses turns, like a busy model.
        with contextlib.suppress(asyncio.QueueFull):
            self._turn_queue.put_nowait(speech_s)

    async def _worker(self) -> None:
        while True:
            speech_s = await self._turn_queue.get()
            self.turns += 1
            if self.scenario.name == "silent":
                continue
            if self.scenario.name == "tool":
                await self._tool_turn(speech_s)
            else:
                await self._reply_turn(speech_s)

    async def _reply_turn(self, speech_s: float) -> None:
        await self.emit_text("USER", f"(stand-in heard {speech_s:.2f} s of speech)")
        await self._speak(f"Hello from the voicegate stand-in. This is reply {self.turns}.")

    async def _tool_turn(self, speech_s: float) -> None:
        name = self.scenario.tool
        if name is None:
            if not self.tools:
                raise ValidationFailed("stand-in scenario tool: promptStart declared no tools")
            name = (
                "get_current_time" if "get_current_time" in self.tools else next(iter(self.tools))
            )
        if name not in self.tools:
            raise ValidationFailed(f"stand-in scenario tool: {name!r} is not in promptStart")
        await self.emit_text("USER", f"Please use the {name} tool.")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tool_use_id = await self.emit_tool_use(name, TOOL_ARGUMENTS.get(name, {}))
        self._tool_results[tool_use_id] = future
        if self.scenario.reset and self._may_fail():
            raise ResetStream("scripted reset while a tool call is open")
        try:
            async with asyncio.timeout(TOOL_RESULT_TIMEOUT_S):
                result = await future
        except TimeoutError as exc:
            raise ValidationFailed("Timed out waiting for the tool result.") from exc
        finally:
            self._tool_results.pop(tool_use_id, None)
        await self._speak(f"The {name} tool returned {result}")

    async def _speak(self, text: str) -> None:
        """Speculative text, audio, final text, usage, completionEnd (or a barge-in)."""
        await self.emit_text("ASSISTANT", text, stage="SPECULATIVE", stop_reason="PARTIAL_TURN")
        paced = self.scenario.name == "barge_in"
        seconds = LONG_REPLY_SECONDS if paced else REPLY_SECONDS
        chunks = _chunks(speech_like(self.output_rate, seconds), self.output_rate)
        cid = await self.begin_audio()
        self._interrupt.clear()
        self._speaking = True
        try:
            start_s = self._input_s
            emitted_s = 0.0
            for i, chunk in enumerate(chunks):
                if self.scenario.name == "reset" and i == 3 and self._may_fail():
                    raise ResetStream("scripted reset after the reply started")
                if paced:
                    while (
                        emitted_s > BARGE_IN_HEAD_START_S + self._input_s - start_s
                        and not self._interrupt.is_set()
                    ):
                        self._clock.clear()
                        await self._clock.wait()
                if self._interrupt.is_set():
                    await self.emit_interrupted(cid)
                    await self.end_completion("INTERRUPTED")
                    return
                await self.emit_audio(cid, chunk)
                emitted_s += len(chunk) / 2 / self.output_rate
        finally:
            self._speaking = False
        await self.end_audio(cid)
        await self.emit_text("ASSISTANT", text, stage="FINAL")
        speech_in = 25
        text_out = len(text.split())
        self._usage_in += speech_in
        self._usage_out += text_out + int(seconds * 25)
        await self.emit(
            UsageEvent(
                self._usage_in,
                self._usage_out,
                self._usage_in + self._usage_out,
                {
                    "delta": {
                        "input": {"speechTokens": speech_in, "textTokens": 0},
                        "output": {"speechTokens": int(seconds * 25), "textTokens": text_out},
                    },
                    "total": {
                        "input": {"speechTokens": self._usage_in, "textTokens": 0},
                        "output": {"speechTokens": self._usage_out, "textTokens": 0},
                    },
                },
                self.ids,
            )
        )
        await self.end_completion()


class EchoBrain(InProcessStream):
    """Each audio chunk comes back at once as assistant audio (resampled to the output rate)."""

    def __init__(self) -> None:
        super().__init__()
        self._audio_name: str | None = None
        self._audio_id: str | None = None
        self._resampler: LinearResampler | None = None
        self.audio_chunks = 0

    async def send(self, event: InputEvent) -> None:
        if isinstance(event, AudioContentStart):
            self._audio_name = event.content_name
            self._resampler = LinearResampler(event.sample_rate, self.output_rate)
        await super().send(event)
        if isinstance(event, ContentEnd) and event.content_name == self._audio_name:
            await self._end()

    async def on_audio_start(self) -> None:
        self._audio_id = await self.begin_audio()

    async def on_audio(self, pcm: bytes) -> None:
        assert self._audio_id is not None and self._resampler is not None
        self.audio_chunks += 1
        await self.emit_audio(self._audio_id, self._resampler.process(pcm))

    async def on_session_end(self) -> None:
        await self._end()

    async def _end(self) -> None:
        if self._audio_id is not None:
            await self.end_audio(self._audio_id)
            self._audio_id = None
            await self.end_completion()


# --------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------

BRAINS: Final = ("scripted", "echo", "local")


class BrainFactory(Protocol):
    name: str

    async def warm(self) -> None:
        """Load what the brain needs before the server accepts calls."""
        ...

    async def open(self) -> InProcessStream: ...

    async def aclose(self) -> None: ...


class ScriptedFactory:
    name = "scripted"

    def __init__(self, default: Scenario) -> None:
        self.default = default

    async def open(self) -> InProcessStream:
        return ScriptedBrain(self.default)

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class EchoFactory:
    name = "echo"

    async def open(self) -> InProcessStream:
        return EchoBrain()

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class LocalFactory:
    """The embedded offline brain, loaded once and shared by every session."""

    name = "local"

    def __init__(self) -> None:
        try:
            from voicegate.backends import local
        except ImportError as exc:
            raise BrainUnavailable(
                "the local brain needs voicegate.backends.local and its models "
                f"(pip install 'voicegate[local]'): {exc}"
            ) from exc
        backend_cls: Any = getattr(local, "LocalBackend", None)
        if backend_cls is None:
            raise BrainUnavailable("voicegate.backends.local has no LocalBackend")
        try:
            self._backend: Any = backend_cls()
        except Exception as exc:  # BackendUnavailable: a package of the extra is missing
            raise BrainUnavailable(f"the local brain cannot run here: {exc}") from exc

    async def warm(self) -> None:
        warm = getattr(self._backend, "warm", None)
        if warm is not None:
            try:
                await warm()
            except BackendError as exc:  # the models could not be loaded
                raise BrainUnavailable(f"the local brain cannot run here: {exc}") from exc

    async def open(self) -> InProcessStream:
        stream = await self._backend.open()
        if not isinstance(stream, InProcessStream):
            raise BrainUnavailable("LocalBackend.open() did not return an InProcessStream")
        return stream

    async def aclose(self) -> None:
        await self._backend.aclose()


def make_factory(kind: str, default_scenario: str = "reply") -> BrainFactory:
    """Build the factory for ``--brain``; raises BrainUnavailable or ValueError."""
    if kind == "scripted":
        return ScriptedFactory(Scenario.parse(default_scenario))
    if kind == "echo":
        return EchoFactory()
    if kind == "local":
        return LocalFactory()
    raise ValueError(f"unknown brain {kind!r} (one of {', '.join(BRAINS)})")
