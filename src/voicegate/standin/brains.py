"""The brains behind the stand-in: what "the model" says on a Bedrock-shaped stream.

Each brain is an ``InProcessStream`` (which already checks Nova Sonic's session grammar the way
Bedrock does); the server only moves its events over the wire. Three kinds:

* ``scripted``: deterministic scenarios for tests, chosen per session by the client through the
  system prompt (``scenario:<name>``, see ``scenarios.py``).
* ``echo``: every user audio chunk comes straight back as assistant audio, with zero think time,
  so latency benchmarks measure the transport and nothing else.
* ``local``: the embedded offline brain (``voicegate.backends.local``), built in
  ``factories.py`` and imported lazily because it pulls in speech models.

Turn-taking in ``scripted`` uses plain RMS energy counted in *audio time* (samples received),
never wall-clock time, so tests are deterministic however slow the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from voicegate.audio.levels import rms
from voicegate.audio.resample import LinearResampler
from voicegate.backends.base import ValidationFailed
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic import (
    AudioContentStart,
    ContentEnd,
    InputEvent,
    Role,
    UsageEvent,
    filler_of,
    late_result_of,
)
from voicegate.standin.errors import EXCEPTIONS, ResetStream
from voicegate.standin.reply_audio import speech_like, split_chunks
from voicegate.standin.scenarios import Scenario, scenario_from_prompt

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
TOOL_RESULT_TIMEOUT_S: Final = 60.0
MAX_PENDING_TURNS: Final = 4


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
        self._usage_text_out = 0
        self._voice = asyncio.Lock()
        """One reply spoken at a time (a tool result arriving asynchronously waits its turn)."""

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

    async def on_text(self, role: Role, text: str, interactive: bool) -> None:
        """Nova 2 says what a slow tool's filler instruction asks, in its own turn, while the
        tool runs; a result given late (its stream replaced) is said as if it had come in time;
        other typed text is not part of any scenario."""
        if role != "USER" or not interactive:
            return
        filler = filler_of(text)
        if filler is not None and self.async_tools:
            self.spawn(self._speak(filler))
        late = late_result_of(text)
        if late is not None:
            self.spawn(self._speak(_tool_returned(*late)))

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
        if self.async_tools:
            # Nova 2 (asynchronous tool calling): the next user turns are answered meanwhile
            # and the result is spoken when it comes.
            self.spawn(self._tool_answer(name, tool_use_id, future))
            return
        await self._tool_answer(name, tool_use_id, future)

    async def _tool_answer(self, name: str, tool_use_id: str, future: asyncio.Future[str]) -> None:
        try:
            async with asyncio.timeout(TOOL_RESULT_TIMEOUT_S):
                result = await future
        except TimeoutError as exc:
            raise ValidationFailed("Timed out waiting for the tool result.") from exc
        finally:
            self._tool_results.pop(tool_use_id, None)
        await self._speak(_tool_returned(name, result))

    async def _speak(self, text: str) -> None:
        async with self._voice:
            await self._speak_now(text)

    async def _speak_now(self, text: str) -> None:
        """Speculative text, audio, final text, usage, completionEnd (or a barge-in). With
        ``--quirks audio-contents`` the reply is said in three audio contents, each with its
        own part of the text (speculative before, final after), as Bedrock does sentence by
        sentence."""
        parts = [text]
        if "audio-contents" in self.quirks:
            words = text.split()
            third = max(1, len(words) // 3)
            parts = [
                " ".join(words[:third]),
                " ".join(words[third : 2 * third]),
                " ".join(words[2 * third :]),
            ]
            parts = [p for p in parts if p] or [text]
        part = iter(parts)
        said = next(part)
        await self.emit_text("ASSISTANT", said, stage="SPECULATIVE", stop_reason="PARTIAL_TURN")
        paced = self.scenario.name == "barge_in"
        seconds = LONG_REPLY_SECONDS if paced else REPLY_SECONDS
        chunks = split_chunks(speech_like(self.output_rate, seconds), self.output_rate)
        splits: set[int] = set()
        if "audio-contents" in self.quirks:
            splits = {len(chunks) // 3, 2 * len(chunks) // 3}
        elif "partial-turn" in self.quirks or "usage-mid-turn" in self.quirks:
            splits = {len(chunks) // 2}
        speech_in = 25
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
                if i and i in splits:
                    # --quirks: the turn goes on in another audio content (OUT2 allows an
                    # AUDIO contentEnd with PARTIAL_TURN), a usageEvent in between.
                    await self.end_audio(cid, "PARTIAL_TURN")
                    if "usage-mid-turn" in self.quirks:
                        await self._usage(speech_in, 0, 0)
                        speech_in = 0
                    if "audio-contents" in self.quirks:
                        await self.emit_text("ASSISTANT", said, stage="FINAL")
                        said = next(part, said)
                        await self.emit_text(
                            "ASSISTANT", said, stage="SPECULATIVE", stop_reason="PARTIAL_TURN"
                        )
                    cid = await self.begin_audio()
                await self.emit_audio(cid, chunk)
                emitted_s += len(chunk) / 2 / self.output_rate
        finally:
            self._speaking = False
        await self.end_audio(cid)
        await self.emit_text("ASSISTANT", said, stage="FINAL")
        await self._usage(speech_in, int(seconds * 25), len(text.split()))
        await self.end_completion()

    async def _usage(self, speech_in: int, speech_out: int, text_out: int) -> None:
        """A usageEvent: this event's delta and the session's running totals."""
        self._usage_in += speech_in
        self._usage_out += speech_out + text_out
        self._usage_text_out += text_out
        await self.emit(
            UsageEvent(
                self._usage_in,
                self._usage_out,
                self._usage_in + self._usage_out,
                {
                    "delta": {
                        "input": {"speechTokens": speech_in, "textTokens": 0},
                        "output": {"speechTokens": speech_out, "textTokens": text_out},
                    },
                    "total": {
                        "input": {"speechTokens": self._usage_in, "textTokens": 0},
                        "output": {
                            "speechTokens": self._usage_out - self._usage_text_out,
                            "textTokens": self._usage_text_out,
                        },
                    },
                },
                self.ids,
            )
        )


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


def _tool_returned(name: str, result: str) -> str:
    """What the scripted brain says of a tool's result, in time or given late."""
    return f"The {name} tool returned {result}"


__all__ = ["SPEECH_RMS", "EchoBrain", "ScriptedBrain"]
