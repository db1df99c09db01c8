"""Nova 2's asynchronous tool calling, emulated by the stand-in on the wire: while a slow tool
runs, the conversation goes on (a later question is answered first) and the slow result is
spoken when it arrives; Nova Sonic v1 waits for the result, as before. voicegate's call path
runs tools in the background on both, through the real SDK."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.conversation import Listener
from tests.support.standin import client_texts, scripted_without_failures
from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.conversation import (
    Conversation,
    ConversationError,
    ConversationSettings,
    ToolCallFinished,
    ToolCallStarted,
    ToolRegistry,
    UserTranscript,
)
from voicegate.sonic import LATE_RESULT_PREFIX, late_result_of
from voicegate.standin import StandIn
from voicegate.standin.reply_audio import speech_like, split_chunks


def _slow_tools(release: asyncio.Event) -> ToolRegistry:
    tools = ToolRegistry()
    calls = 0

    @tools.tool(description="Looks something up; the first lookup is slow.", timeout=30.0)
    async def slow_lookup() -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            return {"answer": "slow"}
        return {"answer": "quick"}

    return tools


@pytest.mark.parametrize(
    ("model_id", "order"),
    [
        ("amazon.nova-2-sonic-v1:0", ["quick", "slow"]),
        ("amazon.nova-sonic-v1:0", ["slow", "quick"]),
    ],
)
async def test_slow_tool_and_the_conversation_going_on(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bedrock_transport: str,
    model_id: str,
    order: list[str],
) -> None:
    release = asyncio.Event()
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        backend = BedrockBackend(BedrockSettings(transport=bedrock_transport, model_id=model_id))
        listener = Listener()
        settings = ConversationSettings(system_prompt="scenario:tool:slow_lookup:greet")
        conv = Conversation(backend, settings, _slow_tools(release), listener)
        try:
            await conv.start()
            started = lambda: len([e for e in listener.events if isinstance(e, ToolCallStarted)])  # noqa: E731
            await listener.until(lambda _: started() >= 1, 20.0)
            _ask(conv)  # a second question while the first lookup still runs
            if order[0] == "quick":
                # Nova 2 answers the second question while the first tool is still running
                # (Nova 1 asks for the second tool only after the first result).
                await listener.until(lambda _: started() >= 2, 20.0)
                await listener.until(lambda _: any('"quick"' in t for t in listener.finals()), 20.0)
                assert not any('"slow"' in t for t in listener.finals())
            release.set()
            await listener.until(
                lambda _: len([t for t in listener.finals() if "answer" in t]) == 2, 20.0
            )
            spoken = [
                ("quick" if '"quick"' in t else "slow") for t in listener.finals() if "answer" in t
            ]
            assert spoken == order
            assert not [e for e in listener.events if isinstance(e, ConversationError)]
        finally:
            release.set()
            await conv.close()
            await backend.aclose()


def _ask(conv: Conversation) -> None:
    """Half a second of speech, then a second of quiet: a question, for the scripted brain."""
    rate = 16000
    for chunk in split_chunks(speech_like(rate, 0.5) + bytes(rate), rate):
        conv.send_audio(chunk)


def _said(listener: Listener) -> str:
    """Everything the assistant said so far, its final texts joined."""
    return " ".join(listener.finals())


@pytest.mark.parametrize("model_id", ["amazon.nova-2-sonic-v1:0", "amazon.nova-sonic-v1:0"])
async def test_a_slow_result_after_a_forced_renewal_is_said_on_the_new_stream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str, model_id: str
) -> None:
    """A renewal forced while a slow tool runs moves the call to a stream that never saw the
    toolUse (Bedrock refuses a toolResult for it): the result goes to that stream as an
    instruction to tell the caller, so the caller hears it without asking again."""
    release = asyncio.Event()
    async with scripted_without_failures(tmp_path / "certs", monkeypatch) as s:
        backend = BedrockBackend(BedrockSettings(transport=bedrock_transport, model_id=model_id))
        listener = Listener()
        settings = ConversationSettings(system_prompt="scenario:tool:slow_lookup")
        conv = Conversation(backend, settings, _slow_tools(release), listener)
        try:
            await conv.start()
            _ask(conv)
            await listener.until(lambda _: bool(listener.of(ToolCallStarted)), 20.0)
            await conv.renew(force=True)
            assert conv.stats.renewals_forced == 1
            release.set()
            await listener.until(lambda _: bool(listener.of(ToolCallFinished)), 20.0)
            (finished,) = listener.of(ToolCallFinished)
            assert finished.ok and '"slow"' in finished.result
            # The whole sentence, however many texts it comes in (--standin-quirks
            # audio-contents says a reply in several).
            sentence = f"slow_lookup tool returned {finished.result}"
            await listener.until(lambda _: sentence in _said(listener), 20.0)
            assert _said(listener).count("tool returned") == 1
            assert conv.stats.tool_results_late == 1
            # Told to the second stream, once, as interactive USER text; never to the first.
            assert len(s.sessions) == 2
            told = [t for t in client_texts(s.sessions[1]) if t[2].startswith(LATE_RESULT_PREFIX)]
            assert [(role, interactive) for role, interactive, _, _ in told] == [("USER", True)]
            assert late_result_of(told[0][2]) == ("slow_lookup", finished.result)
            assert not any(t[2].startswith(LATE_RESULT_PREFIX) for t in client_texts(s.sessions[0]))
            # The instruction is not the caller's words; the history keeps the result itself.
            assert not [e for e in listener.of(UserTranscript) if LATE_RESULT_PREFIX in e.text]
            assert "slow_lookup tool returned" in " ".join(text for _, text in conv.stats.history)
            assert not [e for e in listener.events if isinstance(e, ConversationError)]
        finally:
            release.set()
            await conv.close()
            await backend.aclose()
