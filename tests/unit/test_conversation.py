"""The conversation layer against small in-process brains: setup order, continuous audio,
barge-in, tool round trips, failures and orderly close."""

from __future__ import annotations

import asyncio
import json

from tests.support.conversation import Listener, OneBackend, Recorder
from voicegate.backends.base import Throttled
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    BotInterrupted,
    BotText,
    Conversation,
    ConversationEnded,
    ConversationError,
    ConversationSettings,
    ToolCallFinished,
    ToolCallStarted,
)
from voicegate.conversation.tools import default_tools
from voicegate.sonic import AudioInput, ContentEnd, PromptEnd, SessionEnd


async def _start(stream: InProcessStream) -> tuple[Conversation, Listener]:
    listener = Listener()
    conv = Conversation(OneBackend(stream), ConversationSettings(), default_tools(), listener)
    await conv.start()
    return conv, listener


async def test_setup_then_silence_keeps_the_model_fed_then_orderly_close() -> None:
    brain = Recorder()
    conv, _ = await _start(brain)
    assert brain.prompt is not None and {t.name for t in brain.prompt.tools} >= {"calculate"}
    assert brain.system_prompt == ConversationSettings().system_prompt
    # Nobody supplies audio: the conversation sends silence by itself.
    await brain.until(lambda b: b.audio_chunks >= 10)
    assert brain.audio_chunks >= 10
    caller = b"\x01\x00" * 512
    conv.send_audio(caller)
    await brain.until(
        lambda b: any(isinstance(e, AudioInput) and e.content == caller for e in b.inputs)
    )
    await conv.close()
    tail = [type(e) for e in brain.inputs[-3:]]
    assert tail == [ContentEnd, PromptEnd, SessionEnd]
    assert conv.stats.audio_chunks_sent == 1
    assert conv.end_reason == "closed"


class ToolBrain(InProcessStream):
    async def on_audio_start(self) -> None:
        self.spawn(self._ask())

    async def _ask(self) -> None:
        await self.emit_tool_use("calculate", {"expression": "6 * 7"})

    async def on_tool_result(self, tool_use_id: str, content: str) -> None:
        await self.emit_text("ASSISTANT", f"The answer is {json.loads(content)['result']}.")
        await self.end_completion()


async def test_tool_round_trip() -> None:
    conv, listener = await _start(ToolBrain())
    started = await listener.wait(ToolCallStarted)
    assert isinstance(started, ToolCallStarted) and started.name == "calculate"
    done = await listener.wait(ToolCallFinished)
    assert isinstance(done, ToolCallFinished) and done.ok
    text = await listener.wait(BotText)
    assert isinstance(text, BotText) and "42" in text.text
    await conv.close()


class BargeBrain(InProcessStream):
    async def on_audio_start(self) -> None:
        self.spawn(self._talk())

    async def _talk(self) -> None:
        self.cid = await self.begin_audio()
        await self.emit_audio(self.cid, b"\x10\x00" * 24000)
        await asyncio.sleep(0.05)
        # Both of Nova Sonic's signals, then late audio for the interrupted content.
        await self.emit_interrupted(self.cid)
        await self.emit_audio(self.cid, b"\x10\x00" * 2400)
        await self.end_completion("INTERRUPTED")
        cid2 = await self.begin_audio()
        await self.emit_audio(cid2, b"\x20\x00" * 480)
        await self.end_audio(cid2)


async def test_barge_in_flushes_once_and_drops_late_audio() -> None:
    conv, listener = await _start(BargeBrain())
    event = await listener.wait(BotInterrupted)
    assert isinstance(event, BotInterrupted) and event.dropped_samples == 24000
    # The next turn's audio comes after the interrupted turn's late audio in the brain's output.
    await listener.until(lambda heard: len(heard.audio) >= 2 * 480)
    assert listener.flushes == 1
    assert bytes(listener.audio) == b"\x20\x00" * 480  # only the next turn's audio
    assert conv.stats.barge_ins == 1
    assert not any(isinstance(e, BotText) and "interrupted" in e.text for e in listener.events)
    await conv.close()


class FailingBrain(InProcessStream):
    async def on_audio_start(self) -> None:
        await self.fail(Throttled("Too many requests"))


async def test_backend_failure_is_reported_and_ends_the_conversation() -> None:
    from voicegate.conversation import ContinuationSettings

    listener = Listener()
    fast = ContinuationSettings(throttle_backoff_s=0.01, throttle_backoff_max_s=0.02)
    settings = ConversationSettings(continuation=fast)
    conv = Conversation(OneBackend(FailingBrain()), settings, default_tools(), listener)
    await conv.start()
    ended = await listener.wait(ConversationEnded)
    assert isinstance(ended, ConversationEnded) and ended.reason == "error:throttled"
    # Throttling is retried first (the caller hears it is busy), within a bound.
    errors = [e for e in listener.events if isinstance(e, ConversationError)]
    assert [(e.kind, e.fatal) for e in errors] == [("throttled", False), ("throttled", True)]
    await conv.close()


async def test_grammar_violation_surfaces_as_validation_error() -> None:
    brain = Recorder()
    conv, listener = await _start(brain)
    # Opening a second audio content is refused, like Bedrock does.
    from voicegate.sonic import AudioContentStart

    await conv.legs.send_live(AudioContentStart(conv.prompt_name, "second"))
    err = await listener.wait(ConversationError)
    assert isinstance(err, ConversationError) and err.kind == "validation"
    await conv.close()


class VoiceCounter(Recorder):
    """Sets ``heard`` once ``want`` non-silent chunks arrived."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.voiced = 0
        self.heard = asyncio.Event()

    async def on_audio(self, pcm: bytes) -> None:
        await super().on_audio(pcm)
        if any(pcm):
            self.voiced += 1
            if self.voiced >= self.want:
                self.heard.set()


async def test_replay_buffer_holds_its_duration_at_the_chunk_length_fed() -> None:
    """The caller's chunks and the silence filled in have one length (the configured model
    chunk), and the replay buffer holds exactly ``replay_max_s`` of them."""
    from voicegate.audio.chunks import DEFAULT_CHUNK_MS, configure_chunks
    from voicegate.conversation import ContinuationSettings
    from voicegate.sonic import AudioInput

    try:
        for ms in (20, 40):
            configure_chunks(ms)
            size = 16 * ms * 2
            chunks = 2000 // ms  # 2 s of speech, twice what the buffer holds
            brain = VoiceCounter(chunks)
            settings = ConversationSettings(continuation=ContinuationSettings(replay_max_s=1.0))
            conv = Conversation(OneBackend(brain), settings, default_tools(), Listener())
            await conv.start()
            try:
                await brain.until(lambda b: b.audio_chunks > 0)  # silence is filled in
                voiced = (b"\x00\x10\x00\xf0") * (size // 4)
                for _ in range(chunks):
                    conv.send_audio(voiced)
                    await asyncio.sleep(0)
                async with asyncio.timeout(5):
                    await brain.heard.wait()
                sent = [len(e.content) for e in brain.inputs if isinstance(e, AudioInput)]
                assert conv.stats.silence_chunks_sent > 0
                assert set(sent) == {size}, (ms, set(sent))
                assert conv.memory.replay.seconds == 1.0
                assert sum(map(len, conv.memory.replay.replay())) == 16000 * 2
            finally:
                await conv.close()
    finally:
        configure_chunks(DEFAULT_CHUNK_MS)
