"""Nova 2 features by the capability table: the SYSTEM_SPEECH prompt reaches a Nova 2 stream
(the stand-in's grammar checks its place) and is left out for Nova Sonic v1, which has no such
role (the stand-in refuses it there, as Bedrock would); real SDK against the stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.conversation import Listener
from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.conversation import (
    BotTurnDone,
    Conversation,
    ConversationError,
    ConversationSettings,
    default_tools,
)
from voicegate.sonic.models import NOVA1, NOVA2, model_of
from voicegate.standin import StandIn


# First in the module: it also imports boto3 (BedrockSettings' region), off the event loop.
def test_capabilities_by_documented_id() -> None:
    for prefix in ("", "us.", "global."):
        assert model_of(prefix + "amazon.nova-2-sonic-v1:0") is NOVA2
        assert model_of(prefix + "amazon.nova-sonic-v1:0") is NOVA1
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-2-sonic-v1:0"
    assert model_of(arn) is NOVA2
    # An id the table does not name: not Nova 2 by a substring, only when the operator says so.
    later = "amazon.nova-2-sonic-v2:0"
    assert model_of(later) is NOVA1 and model_of(later, "nova2") is NOVA2
    assert not BedrockSettings(model_id=later).is_nova2
    assert BedrockSettings(model_id=later, model_family="nova2").is_nova2
    assert any("capability table" in w for w in BedrockSettings(model_id=later).warnings())
    assert BedrockSettings(model_family="nova3").validate()
    assert 24000 in NOVA2.input_rates


@pytest.mark.parametrize(
    ("model_id", "sent"),
    [("global.amazon.nova-2-sonic-v1:0", True), ("us.amazon.nova-sonic-v1:0", False)],
)
async def test_speech_prompt_by_model(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bedrock_transport: str,
    model_id: str,
    sent: bool,
) -> None:
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        backend = BedrockBackend(BedrockSettings(transport=bedrock_transport, model_id=model_id))
        listener = Listener()
        settings = ConversationSettings(
            system_prompt="scenario:reply:greet", speech_prompt="Transcribe Hindi in Devanagari."
        )
        conv = Conversation(backend, settings, default_tools(), listener)
        try:
            await conv.start()
            await listener.until(
                lambda _: listener.of(BotTurnDone) or listener.of(ConversationError), 15.0
            )
            assert not listener.of(ConversationError)
        finally:
            await conv.close()
            await backend.aclose()
        (record,) = s.sessions
        roles = [e["contentStart"].get("role") for e in record.events if "contentStart" in e]
        assert ("SYSTEM_SPEECH" in roles) is sent, roles
        assert roles[0] == "SYSTEM"


@pytest.mark.parametrize(
    ("choice", "sent"),
    [("tool:calculate", {"tool": {"name": "calculate"}}), ("any", {"any": {}}), ("", None)],
)
async def test_tool_choice_reaches_the_model(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    choice: str,
    sent: dict[str, Any] | None,
) -> None:
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        backend = BedrockBackend(BedrockSettings(transport="asyncio"))
        listener = Listener()
        settings = ConversationSettings(system_prompt="scenario:reply:greet", tool_choice=choice)
        conv = Conversation(backend, settings, default_tools(), listener)
        try:
            await conv.start()
            await listener.until(
                lambda _: listener.of(BotTurnDone) or listener.of(ConversationError), 15.0
            )
            assert not listener.of(ConversationError)
        finally:
            await conv.close()
            await backend.aclose()
        (record,) = s.sessions
        (prompt,) = [e["promptStart"] for e in record.events if "promptStart" in e]
        assert prompt["toolConfiguration"].get("toolChoice") == sent


def test_tool_choice_checked() -> None:
    from voicegate.sonic.events import tool_choice_problem

    assert tool_choice_problem("auto") is None and tool_choice_problem("tool:x") is None
    assert tool_choice_problem("sometimes")
    assert tool_choice_problem("tool:nope", ["calculate"])
    assert tool_choice_problem("tool:calculate", ["calculate"]) is None
