"""The embedded offline brain end to end, with the real models: speech in, Nova Sonic events out.

Input speech is synthesized at test time (hibari, and espeak-ng for a second, unrelated voice),
resampled to 16 kHz and fed in 512-sample chunks like the conversation layer does. Feeding is
faster than real time; the one behaviour that depends on playback time (barge-in while the reply
is still playing at the browser) runs on a controllable clock.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import cache

import numpy as np
import pytest

from voicegate.audio.levels import rms
from voicegate.audio.resample import resample_pcm16
from voicegate.backends.local import LocalBackend, LocalStream
from voicegate.backends.speech.models import SpeechModels, load_models
from voicegate.backends.speech.policy import (
    REPLIES,
    intent,
    late_result_reply,
    quote_reply,
    time_reply,
)
from voicegate.backends.speech.tts import LEAD_IN_MS, SILENT_SAMPLE
from voicegate.backends.speech.vad import VadConfig
from voicegate.conversation.tools import default_tools
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    AudioOutput,
    CompletionEnd,
    CompletionStart,
    ContentEnd,
    OutputContentEnd,
    OutputContentStart,
    OutputEvent,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
    UsageEvent,
    is_interruption_marker,
    late_result_instruction,
)

pytestmark = pytest.mark.local

RATE = 16000
CHUNK_BYTES = 512 * 2
WAIT = 30.0  # generous: two cores are shared with other test runs


@pytest.fixture(scope="module")
def models() -> SpeechModels:
    return load_models()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))


@cache
def say(text: str) -> bytes:
    """``text`` spoken by hibari, as 16 kHz s16 PCM."""
    return load_models().tts.synthesize(text, RATE)


@cache
def espeak(text: str) -> bytes:
    """``text`` spoken by espeak-ng (a formant voice, nothing like hibari), at 16 kHz."""
    exe = shutil.which("espeak-ng")
    assert exe is not None, "espeak-ng is needed for this test (apt-get install espeak-ng)"
    proc = subprocess.run([exe, "--stdout", text], capture_output=True, check=True, timeout=30)
    with wave.open(io.BytesIO(proc.stdout)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    return resample_pcm16(pcm, rate, RATE)


def trimmed(pcm: bytes, floor: int = 200) -> bytes:
    """``pcm`` without the near-silence at either end."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2")) > floor)
    return pcm[2 * int(loud[0]) : 2 * (int(loud[-1]) + 1)] if len(loud) else b""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Call:
    """Drives one LocalStream the way the conversation layer does."""

    def __init__(self, stream: LocalStream) -> None:
        self.stream = stream
        self.events: AsyncIterator[OutputEvent] = stream.events()

    @classmethod
    async def start(cls, backend: LocalBackend, *, tools: bool = True) -> Call:
        call = cls(await backend.open())
        send = call.stream.send
        await send(SessionStart())
        await send(PromptStart("p", tools=default_tools().specs() if tools else ()))
        await send(TextContentStart("p", "sys", "SYSTEM"))
        await send(TextInput("p", "sys", "You are a helpful assistant."))
        await send(ContentEnd("p", "sys"))
        await send(AudioContentStart("p", "mic"))
        return call

    async def feed(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK_BYTES):
            await self.stream.send(AudioInput("p", "mic", pcm[i : i + CHUNK_BYTES]))

    async def type(self, text: str) -> None:
        """Typed input: an interactive USER text while the audio content is open."""
        send = self.stream.send
        await send(TextContentStart("p", "typed", "USER", interactive=True))
        await send(TextInput("p", "typed", text))
        await send(ContentEnd("p", "typed"))

    async def until(self, done: Callable[[OutputEvent], bool]) -> list[OutputEvent]:
        """Events up to and including the first one for which ``done`` is true."""
        seen: list[OutputEvent] = []
        async with asyncio.timeout(WAIT):
            while True:
                event = await anext(self.events)
                seen.append(event)
                if done(event):
                    return seen

    async def turn(self) -> list[OutputEvent]:
        return await self.until(lambda e: isinstance(e, CompletionEnd))

    async def hang_up(self) -> list[OutputEvent]:
        """End the session in order; the events that were still to come."""
        for event in (ContentEnd("p", "mic"), PromptEnd("p"), SessionEnd()):
            await self.stream.send(event)
        rest: list[OutputEvent] = []
        async with asyncio.timeout(WAIT):
            rest.extend([e async for e in self.events])
        await self.stream.close()
        return rest


def text_blocks(events: list[OutputEvent]) -> list[tuple[str, str | None, str, str]]:
    """(role, generation stage, text, stop reason) of every TEXT content, in order."""
    starts = {e.content_id: e for e in events if isinstance(e, OutputContentStart)}
    texts = {e.content_id: e.content for e in events if isinstance(e, TextOutput)}
    return [
        (
            starts[e.content_id].role,
            starts[e.content_id].generation_stage,
            texts[e.content_id],
            e.stop_reason,
        )
        for e in events
        if isinstance(e, OutputContentEnd) and e.type == "TEXT"
    ]


def user_text(events: list[OutputEvent]) -> str:
    found = [text for role, _, text, _ in text_blocks(events) if role == "USER"]
    assert len(found) == 1, text_blocks(events)
    return found[0]


def reply_audio(events: list[OutputEvent]) -> bytes:
    return b"".join(e.content for e in events if isinstance(e, AudioOutput))


def is_audio_start(event: OutputEvent) -> bool:
    return isinstance(event, OutputContentStart) and event.type == "AUDIO"


# -- turns -----------------------------------------------------------------------------------


async def test_greeting_turn_has_nova_sonic_shape(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("Hello.") + silence(1.0))
    events = await call.turn()

    assert isinstance(events[0], CompletionStart)
    assert "hello" in user_text(events).lower()
    blocks = text_blocks(events)
    assert [(role, stage) for role, stage, _, _ in blocks] == [
        ("USER", "FINAL"),
        ("ASSISTANT", "SPECULATIVE"),
        ("ASSISTANT", "FINAL"),
    ]
    assert blocks[1][2] == blocks[2][2] == REPLIES["greeting"]
    assert all(stop == "END_TURN" for *_, stop in blocks)

    # Order: USER text, SPECULATIVE, then the audio content, then FINAL, usage, completionEnd.
    kinds = [type(e).__name__ for e in events]
    audio_start = next(i for i, e in enumerate(events) if is_audio_start(e))
    audio_end = next(
        i for i, e in enumerate(events) if isinstance(e, OutputContentEnd) and e.type == "AUDIO"
    )
    assert kinds[audio_start + 1 : audio_end] == ["AudioOutput"] * (audio_end - audio_start - 1)
    assert events[audio_end].stop_reason == "END_TURN"  # type: ignore[union-attr]
    assert kinds[-2:] == ["UsageEvent", "CompletionEnd"]
    end = events[-1]
    assert isinstance(end, CompletionEnd) and end.stop_reason == "END_TURN"
    start = events[audio_start]
    assert isinstance(start, OutputContentStart) and start.role == "ASSISTANT"
    assert start.sample_rate == 24000

    # Real speech at 24 kHz, in chunks of at most 160 ms of whole samples.
    chunks = [e.content for e in events if isinstance(e, AudioOutput)]
    assert all(0 < len(c) <= 24000 * 160 // 1000 * 2 and len(c) % 2 == 0 for c in chunks)
    audio = reply_audio(events)
    assert 1.5 < len(audio) / 2 / 24000 < 10
    assert rms(audio) > 500

    usage = events[-2]
    assert isinstance(usage, UsageEvent) and usage.details["unit"] == "words"
    assert usage.output_tokens == len(REPLIES["greeting"].split())
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    stats = call.stream.stats[-1]
    assert stats.latency_ms is not None and stats.audio_seconds > 1.5
    assert await call.hang_up() == []


async def test_typed_text_is_answered_by_voice_without_a_transcript(
    models: SpeechModels,
) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3))
    await call.type("What time is it?")
    before = await call.until(lambda e: isinstance(e, ToolUse))
    use = before[-1]
    assert isinstance(use, ToolUse) and use.tool_name == "get_current_time"
    await call.stream.send(ToolResultContentStart("p", "r", use.tool_use_id))
    result = {"spoken": "3:04 p.m.", "timezone": "UTC"}
    await call.stream.send(ToolResult("p", "r", json.dumps(result)))
    await call.stream.send(ContentEnd("p", "r"))
    events = before + await call.turn()
    blocks = text_blocks(events)
    # No USER transcript: the client has the text it typed.
    assert [(role, stage) for role, stage, _, _ in blocks] == [
        ("ASSISTANT", "SPECULATIVE"),
        ("ASSISTANT", "FINAL"),
    ]
    assert blocks[-1][2] == "It is 3:04 p.m. in UTC."
    assert len(reply_audio(events)) / 2 / 24000 > 0.5 and rms(reply_audio(events)) > 500
    assert call.stream.user_texts == deque(["What time is it?"])
    assert await call.hang_up() == []


async def test_a_late_tool_result_is_said_without_asking_the_tool_again(
    models: SpeechModels,
) -> None:
    """The result of a tool the previous stream asked for, given as the conversation gives it
    after a renewal: said as a reply, and no new toolUse."""
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3))
    result = {"spoken": "3:04 p.m.", "timezone": "Europe/Berlin"}
    await call.type(late_result_instruction("get_current_time", json.dumps(result)))
    events = await call.turn()
    assert not [e for e in events if isinstance(e, ToolUse)]
    blocks = text_blocks(events)
    assert [(role, stage) for role, stage, _, _ in blocks] == [
        ("ASSISTANT", "SPECULATIVE"),
        ("ASSISTANT", "FINAL"),
    ]
    assert blocks[-1][2] == "It is 3:04 p.m. in Berlin."
    assert len(reply_audio(events)) / 2 / 24000 > 0.5
    assert await call.hang_up() == []


def test_late_result_replies() -> None:
    passages = {"passages": [{"text": "Opening hours are nine to five.", "score": 0.9}]}
    assert "nine to five" in late_result_reply("search_knowledge", json.dumps(passages))
    assert late_result_reply("search_knowledge", "{}") == "Sorry, I found nothing on that."
    assert late_result_reply("order_status", "{}") == "The order_status tool has finished."


async def test_a_greeting_instruction_makes_the_assistant_speak_first(
    models: SpeechModels,
) -> None:
    from voicegate.conversation import BotText, Conversation, ConversationSettings

    class Listener:
        def __init__(self) -> None:
            self.audio = 0
            self.texts: asyncio.Queue[BotText] = asyncio.Queue()

        def on_audio(self, pcm: bytes) -> None:
            self.audio += len(pcm)

        def on_flush(self) -> int:
            return 0

        def on_event(self, event: object) -> None:
            if isinstance(event, BotText) and event.final:
                self.texts.put_nowait(event)

    listener = Listener()
    settings = ConversationSettings(greeting="Greet the caller and offer your help.")
    conv = Conversation(LocalBackend(), settings, default_tools(), listener)
    await conv.start()  # nobody speaks: only silence is sent
    try:
        async with asyncio.timeout(WAIT):
            text = await listener.texts.get()
        assert text.text == REPLIES["greeting"]
        assert listener.audio / 2 / 24000 > 1.0
        assert not any(role == "USER" for role, _ in conv.stats.history)
    finally:
        await conv.close()


async def test_time_question_makes_a_real_tool_call(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + espeak("What time is it?") + silence(1.0))
    before = await call.until(lambda e: isinstance(e, ToolUse))
    assert "what time is it" in user_text(before).lower()
    use = before[-1]
    assert isinstance(use, ToolUse) and use.tool_name == "get_current_time"
    assert not any(isinstance(e, AudioOutput) for e in before)  # it waits for the result

    result, ok = await default_tools().run(use.tool_name, use.content)
    assert ok
    await call.stream.send(ToolResultContentStart("p", "tool-1", use.tool_use_id))
    await call.stream.send(ToolResult("p", "tool-1", result))
    await call.stream.send(ContentEnd("p", "tool-1"))
    after = await call.turn()
    spoken = json.loads(result)["spoken"]
    finals = [text for role, stage, text, _ in text_blocks(after) if stage == "FINAL"]
    assert finals and spoken in finals[-1]
    assert rms(reply_audio(after)) > 500
    await call.hang_up()


async def test_unanswered_tool_call_times_out_into_an_apology(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend(tool_timeout=0.3))
    await call.feed(silence(0.3) + say("What's the time?") + silence(1.0))
    events = await call.turn()
    assert any(isinstance(e, ToolUse) for e in events)
    finals = [text for role, stage, text, _ in text_blocks(events) if role == "ASSISTANT"]
    assert finals[-1] == REPLIES["tool_timeout"]
    await call.hang_up()


async def test_time_question_without_the_tool_is_answered_honestly(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend(), tools=False)
    await call.feed(silence(0.3) + say("What time is it?") + silence(1.0))
    events = await call.turn()
    assert not any(isinstance(e, ToolUse) for e in events)
    assert text_blocks(events)[-1][2] == REPLIES["no_clock"]
    await call.hang_up()


async def test_other_speech_is_quoted(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("The weather is lovely today.") + silence(1.0))
    events = await call.turn()
    reply = text_blocks(events)[-1][2].lower()
    assert reply.startswith("you said:") and "weather is lovely" in reply
    await call.hang_up()


async def test_the_reply_sounds_from_its_first_chunk(models: SpeechModels) -> None:
    """The turn's latency ends at the first reply chunk: that chunk must already be voice, not
    the synthesizer's lead-in silence (which later sentences keep, as pauses)."""
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("The weather is lovely today.") + silence(1.0))
    events = await call.turn()
    samples = np.abs(np.frombuffer(reply_audio(events), dtype="<i2").astype(np.int32))
    rate = call.stream.output_rate
    first_loud = int(np.flatnonzero(samples >= SILENT_SAMPLE)[0])
    assert first_loud <= LEAD_IN_MS * rate // 1000
    await call.hang_up()


def test_only_a_first_sentence_loses_its_lead_in(models: SpeechModels) -> None:
    def lead_in_ms(pcm: bytes) -> float:
        samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
        return int(np.flatnonzero(samples >= SILENT_SAMPLE)[0]) / RATE * 1000

    assert lead_in_ms(models.tts.synthesize("It is noon.", RATE)) > 100  # hibari's own pause
    assert lead_in_ms(models.tts.synthesize("It is noon.", RATE, first=True)) <= LEAD_IN_MS


async def test_silence_and_noise_make_no_turn(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(2 * RATE) * 300).astype("<i2").tobytes()
    t = np.arange(RATE) / RATE
    hum = (np.sin(2 * np.pi * 120 * t) * 8000).astype("<i2").tobytes()
    await call.feed(silence(2) + noise + hum + silence(1))
    assert call.stream.segments == 0  # the VAD runs inline: nothing is pending
    assert await call.hang_up() == []


async def test_a_pause_while_transcribing_makes_one_turn(models: SpeechModels) -> None:
    """The user pauses just past the end-point, then goes on: one turn hears both parts."""
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("Hello.") + silence(0.7))
    assert call.stream.segments == 1  # a turn started transcribing...
    await call.feed(say("How are you?") + silence(1.0))  # ...but the user kept talking
    events = await call.turn()
    heard = user_text(events).lower()
    assert "hello" in heard and "how are you" in heard
    assert not any(isinstance(e, TextOutput) and is_interruption_marker(e.content) for e in events)


async def test_a_short_pause_discards_the_speculative_transcript(models: SpeechModels) -> None:
    """A pause longer than the speculation point but shorter than the hangover: Whisper starts on
    the first part and finishes, yet the user goes on, so that guess is thrown away and one turn
    hears the whole utterance."""
    call = await Call.start(LocalBackend())
    stream = call.stream
    # hibari pads its output with ~0.3 s of silence each side: trim it to control the pause.
    await call.feed(silence(0.3) + trimmed(say("Hello.")) + silence(0.3))
    guess = stream.speculation.pending
    assert guess is not None and stream.segments == 0  # decoding, but no end confirmed
    heard_first, _ms = await guess  # the guess really completes: it heard only "hello"
    assert "hello" in heard_first.lower() and "how" not in heard_first.lower()
    await call.feed(trimmed(say("How are you?")) + silence(1.0))
    events = await call.turn()
    heard = user_text(events).lower()
    assert "hello" in heard and "how are you" in heard
    assert stream.segments == 1 and len(stream.stats) == 1
    assert stream.stats[-1].speculative  # the end's own guess was used...
    assert stream.speculation.started == 2 and stream.speculation.used == 1
    assert stream.speculation.discarded == 1  # ...and the pause's was not
    await call.hang_up()


async def test_a_normal_turn_uses_its_speculative_transcript(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("The weather is lovely today.") + silence(1.0))
    events = await call.turn()
    assert "weather is lovely" in user_text(events).lower()
    assert len(call.stream.stats) == 1 and call.stream.stats[-1].speculative
    assert call.stream.speculation.used == 1 and call.stream.speculation.discarded == 0
    await call.hang_up()


async def test_without_speculation_the_turn_is_decoded_after_the_end(
    models: SpeechModels,
) -> None:
    call = await Call.start(LocalBackend(vad_config=VadConfig(speculate_ms=0)))
    await call.feed(silence(0.3) + say("Hello.") + silence(1.0))
    events = await call.turn()
    assert "hello" in user_text(events).lower()
    assert not call.stream.stats[-1].speculative and call.stream.speculation.started == 0
    await call.hang_up()


# -- barge-in --------------------------------------------------------------------------------


async def test_barge_in_while_the_reply_is_generated(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("Hello.") + silence(1.0))
    before = await call.until(is_audio_start)
    audio_cid = before[-1]
    assert isinstance(audio_cid, OutputContentStart)
    # The first sentence is being synthesized in a worker thread right now; the user talks over
    # it. (Feeding never yields to the event loop, so the reply cannot move on meanwhile.)
    await call.feed(say("Please stop.") + silence(1.0))
    cut = await call.turn()
    assert not any(isinstance(e, AudioOutput) for e in cut)
    assert any(isinstance(e, TextOutput) and is_interruption_marker(e.content) for e in cut)
    assert ("ASSISTANT", "FINAL", '{ "interrupted" : true }', "INTERRUPTED") in text_blocks(cut)
    # Nova 2's order: the AUDIO content ends as END_TURN before the INTERRUPTED text.
    (audio_end,) = [
        i
        for i, e in enumerate(cut)
        if isinstance(e, OutputContentEnd) and e.content_id == audio_cid.content_id
    ]
    assert cut[audio_end].stop_reason == "END_TURN"  # type: ignore[union-attr]
    assert any(
        isinstance(e, TextOutput) and is_interruption_marker(e.content)
        for e in cut[audio_end + 1 :]
    )
    end = cut[-1]
    assert isinstance(end, CompletionEnd) and end.stop_reason == "INTERRUPTED"
    # What interrupted it is heard and answered as the next turn.
    following = await call.turn()
    assert "stop" in user_text(following).lower()
    assert call.stream.interruptions == 1
    await call.hang_up()


async def test_barge_in_while_the_reply_is_still_playing(models: SpeechModels) -> None:
    clock = FakeClock()
    call = await Call.start(LocalBackend(clock=clock))
    await call.feed(silence(0.3) + say("Hello.") + silence(1.0))
    first = await call.turn()
    assert isinstance(first[-1], CompletionEnd) and first[-1].stop_reason == "END_TURN"

    # All of the reply was sent, but no time has passed: the browser is still playing it.
    await call.feed(say("Wait a moment.") + silence(1.0))
    cut = await call.turn()
    assert [type(e) for e in cut] == [
        CompletionStart,
        OutputContentStart,
        TextOutput,
        OutputContentEnd,
        CompletionEnd,
    ]
    assert text_blocks(cut) == [("ASSISTANT", "FINAL", '{ "interrupted" : true }', "INTERRUPTED")]
    assert isinstance(cut[-1], CompletionEnd) and cut[-1].stop_reason == "INTERRUPTED"
    second = await call.turn()
    assert "wait a moment" in user_text(second).lower()

    # Once a reply has finished playing, speech is simply the next turn.
    clock.now += 60
    await call.feed(say("Hello.") + silence(1.0))
    third = await call.turn()
    assert "hello" in user_text(third).lower()
    assert not any(isinstance(e, TextOutput) and is_interruption_marker(e.content) for e in third)
    assert call.stream.interruptions == 1
    await call.hang_up()


# -- lifecycle -------------------------------------------------------------------------------


async def test_close_mid_turn_is_prompt_and_quiet(models: SpeechModels) -> None:
    call = await Call.start(LocalBackend())
    await call.feed(silence(0.3) + say("Hello.") + silence(1.0))  # ASR is starting now
    async with asyncio.timeout(5):
        await call.stream.close()
        assert [e async for e in call.events] == []


async def test_models_are_loaded_once_and_shared(models: SpeechModels) -> None:
    backend = LocalBackend()
    unloaded = backend.models
    assert unloaded is None
    assert await backend.warm() is models
    one, two = await backend.open(), await backend.open()
    assert one is not two and backend.models is models
    await one.close()
    await two.close()
    await backend.aclose()
    assert models.load_seconds > 0 and models.rss_after_load_mb > 0


# -- reply policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("Hello.", "greeting"),
        ("Hi there!", "greeting"),
        ("What time is it?", "time"),
        ("Hey, what's the time?", "time"),
        ("Okay, bye.", "goodbye"),
        ("The weather is nice.", "echo"),
        ("This is history.", "echo"),  # "hi" inside a word is no greeting
        ("Greet the caller and offer your help.", "greeting"),  # a --greeting instruction
    ],
)
def test_intent(heard: str, expected: str) -> None:
    assert intent(heard) == expected


def test_time_reply() -> None:
    result = {"timezone": "Europe/Berlin", "time": "15:04", "spoken": "3:04 p.m."}
    assert time_reply(json.dumps(result)) == "It is 3:04 p.m. in Berlin."
    assert time_reply(json.dumps({"time": "15:04"})) == "It is 15:04."
    assert time_reply(json.dumps({"error": "boom"})) == "Sorry, I could not get the time."
    assert time_reply("not json") == "Sorry, I could not get the time."


def test_quote_reply_is_bounded() -> None:
    assert quote_reply("Nice weather.") == "You said: Nice weather."
    long = quote_reply(" ".join(["word"] * 100))
    assert len(long.split()) < 50
