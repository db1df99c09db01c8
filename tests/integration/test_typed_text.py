"""Nova 2 cross-modal input: typed text in a live call, the assistant speaking first
(``--greeting``), an unanswered turn re-sent after a recovery, and tool results as JSON objects.

The conversation is driven against small in-process brains (to see every event it sends), the
echo brain, and the Bedrock stand-in through the real AWS SDK (the stand-in's record is what
went over the wire).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import require
from tests.support.conversation import Listener, OneBackend, Recorder
from tests.support.standin import client_texts
from voicegate.backends.base import BackendStream, StreamLost
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.backends.echo import EchoBackend
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    BotText,
    Conversation,
    ConversationSettings,
    SessionContinued,
    Tool,
    ToolCallFinished,
    UserTranscript,
    default_tools,
)
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    InputEvent,
    TextContentStart,
    TextInput,
)
from voicegate.standin import StandIn


def audio_after_typed(inputs: list[InputEvent]) -> bool:
    """Audio reached the brain after the (last) interactive USER text content began."""
    starts = [i for i, e in enumerate(inputs) if isinstance(e, TextContentStart) and e.interactive]
    return bool(starts) and any(isinstance(e, AudioInput) for e in inputs[starts[-1] :])


def _audio_after_typed_over_the_sdk(record: Any) -> bool:
    """The stand-in received audio after an interactive TEXT content began."""
    typed = [
        i
        for i, e in enumerate(record.events)
        if e.get("contentStart", {}).get("interactive") is True
        and e["contentStart"]["type"] == "TEXT"
    ]
    return bool(typed) and "audioInput" in record.input_names()[typed[-1] :]


def interactive_block(inputs: list[InputEvent]) -> tuple[int, str]:
    """Index of the (one) interactive USER text content a brain received, and its text."""
    (start,) = [
        i for i, e in enumerate(inputs) if isinstance(e, TextContentStart) and e.interactive
    ]
    event = inputs[start]
    assert isinstance(event, TextContentStart) and event.role == "USER"
    end = next(
        i
        for i, e in enumerate(inputs)
        if isinstance(e, ContentEnd) and e.content_name == event.content_name
    )
    parts = inputs[start + 1 : end]
    assert all(isinstance(e, TextInput) for e in parts)  # nothing interleaved
    return start, "".join(e.content for e in parts if isinstance(e, TextInput))


def _sdk_backend() -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(region="us-east-1", send_timeout=3.0, close_timeout=1.0, open_timeout=3.0)
    )


async def _bot_text(listener: Listener, timeout: float = 10.0) -> BotText:
    async with asyncio.timeout(timeout):
        while True:
            for event in listener.events:
                if isinstance(event, BotText) and event.final:
                    return event
            listener.changed.clear()
            await listener.changed.wait()


# -- typed text ------------------------------------------------------------------------------


async def test_typed_text_round_trip_with_the_echo_brain() -> None:
    listener = Listener()
    conv = Conversation(EchoBackend(), ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        await conv.send_text("  hello there,   how are you  ")
        reply = await _bot_text(listener)
        assert reply.text == "You typed: hello there, how are you"
        # Answered by voice too: a beep per word, at the output rate.
        assert len(listener.audio) / 2 / 24000 == pytest.approx(5 * 0.2, abs=0.01)
        assert listener.events[0] == UserTranscript("hello there, how are you", True)
        assert conv.stats.history == [
            ("USER", "hello there, how are you"),
            ("ASSISTANT", "You typed: hello there, how are you"),
        ]
        assert conv.stats.user_texts_sent == 1 and not conv.memory.unanswered
    finally:
        await conv.close()


async def test_typed_text_is_interactive_user_text_while_audio_flows() -> None:
    brain = Recorder()
    conv = Conversation(OneBackend(brain), ConversationSettings(), default_tools(), Listener())
    await conv.start()
    try:
        await brain.until(lambda b: b.audio_chunks > 0)
        await conv.send_text("   ")  # blank: nothing is sent
        await conv.send_text("é" * 2500)  # 5000 bytes: cut, sent in parts of at most ~1 KB
        await brain.until(lambda b: audio_after_typed(b.inputs))
    finally:
        await conv.close()
    inputs = brain.inputs
    start, text = interactive_block(inputs)
    audio_start = next(i for i, e in enumerate(inputs) if isinstance(e, AudioContentStart))
    assert audio_start < start
    assert any(isinstance(e, AudioInput) for e in inputs[:start])
    assert any(isinstance(e, AudioInput) for e in inputs[start:])  # the audio content stays open
    parts = [e for e in inputs if isinstance(e, TextInput) and "é" in e.content]
    assert len(parts) == 4 and all(len(p.content.encode()) <= 1000 for p in parts)
    assert len(text.encode()) <= 4000 and text.endswith(" …")
    assert list(brain.user_texts) == [text]
    assert conv.stats.user_texts_sent == 1


async def test_typed_text_goes_over_the_sdk_as_interactive_user_text(standin: StandIn) -> None:
    listener = Listener()
    conv = Conversation(_sdk_backend(), ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        async with asyncio.timeout(5):
            record = await standin.session()
            await record.until(lambda r: "audioInput" in r.input_names())
        await conv.send_text("what is on the menu today")
        async with asyncio.timeout(5):
            await record.until(_audio_after_typed_over_the_sdk)
    finally:
        await conv.close()
    (record,) = standin.sessions
    async with asyncio.timeout(5):
        await record.done.wait()
    assert record.outcome == "completed" and record.error is None  # the grammar took it
    assert ("USER", True, "what is on the menu today", True) in client_texts(record)
    names = record.input_names()
    typed = next(
        i
        for i, e in enumerate(record.events)
        if "contentStart" in e
        and e["contentStart"].get("interactive") is True
        and e["contentStart"]["type"] == "TEXT"
    )
    assert names[typed : typed + 3] == ["contentStart", "textInput", "contentEnd"]
    assert "audioInput" in names[typed + 3 :]  # audio kept flowing after it
    assert not any(isinstance(e, BotText) for e in listener.events)  # scripted: no reply


@pytest.mark.local
async def test_typed_text_is_answered_by_voice_and_text_through_the_sdk(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole path: conversation -> real SDK -> stand-in running the local brain -> spoken
    and written answer back."""
    try:
        from voicegate.backends.speech.policy import REPLIES
        from voicegate.standin.factories import BrainUnavailable
    except ImportError as exc:
        require(False, f"the local brain is not installed: {exc}")
        raise
    try:
        standin = StandIn("local", cert_dir=tmp_path / "certs")
        await standin.start()
    except BrainUnavailable as exc:
        require(False, str(exc))
        raise
    try:
        for name, value in standin.client_env().items():
            monkeypatch.setenv(name, value)
        listener = Listener()
        conv = Conversation(_sdk_backend(), ConversationSettings(), default_tools(), listener)
        await conv.start()
        try:
            await conv.send_text("Hello there!")
            reply = await _bot_text(listener, 30)
            assert reply.text == REPLIES["greeting"]
            assert len(listener.audio) / 2 / 24000 > 1.0  # spoken, through the SDK
        finally:
            await conv.close()
    finally:
        await standin.stop()


# -- the assistant speaks first -------------------------------------------------------------


async def test_greeting_is_sent_right_after_the_audio_content_starts() -> None:
    brain = Recorder()
    settings = ConversationSettings(greeting="Greet the caller.")
    conv = Conversation(OneBackend(brain), settings, default_tools(), Listener())
    await conv.start()
    await conv.close()
    start, text = interactive_block(brain.inputs)
    assert isinstance(brain.inputs[start - 1], AudioContentStart)
    assert text == "Greet the caller."
    assert conv.stats.history == []  # an instruction, not something the user said


async def test_the_echo_brain_answers_the_greeting_before_anyone_speaks() -> None:
    listener = Listener()
    settings = ConversationSettings(greeting="Say hello")
    conv = Conversation(EchoBackend(), settings, default_tools(), listener)
    await conv.start()
    try:
        reply = await _bot_text(listener)
        assert reply.text == "You typed: Say hello" and len(listener.audio) > 0
        assert not any(isinstance(e, UserTranscript) for e in listener.events)
    finally:
        await conv.close()


async def test_greeting_goes_over_the_sdk(standin: StandIn) -> None:
    settings = ConversationSettings(greeting="Greet the caller.")
    conv = Conversation(_sdk_backend(), settings, default_tools(), Listener())
    await conv.start()
    async with asyncio.timeout(5):
        record = await standin.session()
        await record.until(lambda r: "audioInput" in r.input_names())
    await conv.close()
    (record,) = standin.sessions
    async with asyncio.timeout(5):
        await record.done.wait()
    assert record.outcome == "completed"
    names = record.input_names()
    audio = names.index("audioInput")
    assert names[audio - 4 : audio] == ["contentStart", "contentStart", "textInput", "contentEnd"]
    assert client_texts(record)[-1] == ("USER", True, "Greet the caller.", True)


def test_greeting_option() -> None:
    from voicegate.config import ConfigError, resolve
    from voicegate.signaling.app import conversation_settings

    config = resolve(None, env={"VOICEGATE_GREETING": "Greet the caller."})
    assert conversation_settings(config).greeting == "Greet the caller."
    assert conversation_settings(resolve(None, env={})).greeting == ""
    with pytest.raises(ConfigError):
        resolve(None, env={"VOICEGATE_GREETING": "x" * 4001})


# -- an unanswered turn after a recovery -----------------------------------------------------


class Streams:
    """Each stream: a Recorder; the first one hears a user turn and dies before answering
    (``answer``: after answering it)."""

    name = "test"

    input_rate = 16000

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.opened: list[Recorder] = []
        self.gate: asyncio.Event | None = None  # when set: the second open waits for it
        self.waiting = asyncio.Event()

    async def open(self) -> BackendStream:
        if self.opened and self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        stream = Dying(self.answer) if not self.opened else Recorder()
        self.opened.append(stream)
        return stream

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


class Dying(Recorder):
    def __init__(self, answer: bool) -> None:
        super().__init__()
        self.answer = answer

    async def on_audio_start(self) -> None:
        self.spawn(self._turn())

    async def _turn(self) -> None:
        await self.emit_text("ASSISTANT", "Hi, how can I help?")
        await self.emit_text("USER", "what time is it")
        if self.answer:
            await self.emit_text("ASSISTANT", "It is noon.")
        await self.emit_text("ASSISTANT", "It is", stage="SPECULATIVE")
        await asyncio.sleep(0.1)
        await self.fail(StreamLost("reset mid-reply"))


async def _recovered(backend: Streams) -> tuple[Conversation, Listener]:
    listener = Listener()
    conv = Conversation(backend, ConversationSettings(), default_tools(), listener)
    await conv.start()
    event = await listener.wait(SessionContinued)
    assert isinstance(event, SessionContinued) and event.kind == "recovery"
    return conv, listener


async def test_an_unanswered_turn_is_resent_as_interactive_text_after_a_recovery() -> None:
    backend = Streams()
    conv, listener = await _recovered(backend)
    await conv.close()
    transcripts = [e for e in listener.events if isinstance(e, UserTranscript)]
    assert transcripts == [UserTranscript("what time is it", True)]
    new = backend.opened[1]
    start, text = interactive_block(new.inputs)
    assert text == "what time is it"
    assert isinstance(new.inputs[start - 1], AudioContentStart)  # before any audio
    assert new.history == []  # not in the history too (leading ASSISTANT is dropped)
    assert conv.stats.turns_resent == 1


async def test_an_answered_turn_stays_in_the_history_and_is_not_resent() -> None:
    backend = Streams(answer=True)
    conv, _ = await _recovered(backend)
    await conv.close()
    new = backend.opened[1]
    assert new.history == [("USER", "what time is it"), ("ASSISTANT", "It is noon.")]
    assert not any(isinstance(e, TextContentStart) and e.interactive for e in new.inputs)
    assert conv.stats.turns_resent == 0


async def test_text_typed_during_a_recovery_reaches_the_new_stream() -> None:
    backend = Streams(answer=True)
    backend.gate = asyncio.Event()
    listener = Listener()
    conv = Conversation(backend, ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        async with asyncio.timeout(5):
            await backend.waiting.wait()  # the stream died; its replacement is being opened
        assert conv.legs.live is None
        await conv.send_text("are you still there")
        backend.gate.set()
        await listener.wait(SessionContinued)
    finally:
        await conv.close()
    _, text = interactive_block(backend.opened[1].inputs)
    assert text == "are you still there"


async def test_text_typed_during_a_renewal_switch_goes_to_the_new_stream() -> None:
    backend = Streams(answer=True)
    backend.opened.append(Recorder())  # so every open gives a plain Recorder
    listener = Listener()
    conv = Conversation(backend, ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        old = conv.legs.live
        assert old is not None
        old.retired = True  # the moment a renewal switches streams (``_hand_over``)
        typed = asyncio.ensure_future(conv.send_text("one more thing"))
        await listener.wait(UserTranscript)  # taken: it now waits for the switch to end
        assert not typed.done()
        new = await conv.legs.open()
        await conv.legs.go_live(new, [], [])
        async with asyncio.timeout(5):
            await typed
    finally:
        await conv.close()
    first, second = backend.opened[1], backend.opened[2]
    assert not any(isinstance(e, TextContentStart) and e.interactive for e in first.inputs)
    assert interactive_block(second.inputs)[1] == "one more thing"


# -- tool results ----------------------------------------------------------------------------


class ToolBrain(InProcessStream):
    def __init__(self) -> None:
        super().__init__()
        self.results: list[Any] = []

    async def on_audio_start(self) -> None:
        self.spawn(self._ask())

    async def _ask(self) -> None:
        await self.emit_tool_use("lucky_number", {})

    async def on_tool_result(self, tool_use_id: str, content: str) -> None:
        self.results.append(json.loads(content))
        await self.emit_text("ASSISTANT", "Done.")


async def test_a_tool_result_that_is_not_an_object_is_wrapped() -> None:
    tools = default_tools()
    tools.add(Tool("lucky_number", "A lucky number.", {"type": "object"}, lambda: 7))
    brain = ToolBrain()
    listener = Listener()
    conv = Conversation(OneBackend(brain), ConversationSettings(), tools, listener)
    await conv.start()
    try:
        done = await listener.wait(ToolCallFinished)
        await _bot_text(listener)
    finally:
        await conv.close()
    assert isinstance(done, ToolCallFinished) and json.loads(done.result) == {"result": 7}
    assert brain.results == [{"result": 7}]


class EchoingBrain(Recorder):
    """Reports interactive USER text back as a USER transcript (a model may do that)."""

    async def on_text(self, role: Any, text: str, interactive: bool) -> None:
        if interactive:
            await self.emit_text("USER", text.upper())
            await self.emit_text("ASSISTANT", "Noted.")


async def test_a_model_echo_of_typed_text_is_not_a_second_user_turn() -> None:
    listener = Listener()
    conv = Conversation(
        OneBackend(EchoingBrain()), ConversationSettings(), default_tools(), listener
    )
    await conv.start()
    try:
        await conv.send_text("book a table")
        await _bot_text(listener)
    finally:
        await conv.close()
    transcripts = [e for e in listener.events if isinstance(e, UserTranscript)]
    assert transcripts == [UserTranscript("book a table", True)]
    assert conv.stats.history == [("USER", "book a table"), ("ASSISTANT", "Noted.")]
