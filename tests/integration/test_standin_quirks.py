"""``voicegate standin --quirks``: Bedrock's irregular-but-documented output through the real
SDK, and the client handling it (one turn however many audio contents, usage summed, no
completionEnd per turn)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.conversation import Listener
from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.conversation import (
    BotAudioStarted,
    BotTurnDone,
    Conversation,
    ConversationError,
    ConversationSettings,
    Usage,
    default_tools,
)
from voicegate.standin import StandIn
from voicegate.standin.quirks import QUIRKS, parse_quirks


def test_quirks_parse() -> None:
    assert parse_quirks("all") == frozenset(QUIRKS)
    assert parse_quirks("goaway, partial-turn") == {"goaway", "partial-turn"}
    assert parse_quirks("") == frozenset()
    with pytest.raises(ValueError, match="unknown quirks"):
        parse_quirks("goaway,nonsense")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicegate",
            "standin",
            "--cert-dir",
            "/nonexistent",
            "--quirks",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown quirks" in done.stderr


@pytest.mark.parametrize("quirks", ["audio-contents,usage-mid-turn,one-completion", "partial-turn"])
async def test_irregular_output_makes_one_turn_and_summed_usage(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bedrock_transport: str,
    quirks: str,
) -> None:
    async with StandIn("scripted", cert_dir=tmp_path / "certs", quirks=parse_quirks(quirks)) as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        backend = BedrockBackend(BedrockSettings(transport=bedrock_transport, send_timeout=3.0))
        listener = Listener()
        settings = ConversationSettings(system_prompt="scenario:reply:greet")
        conv = Conversation(backend, settings, default_tools(), listener)
        try:
            await conv.start()
            await listener.until(lambda _: listener.of(BotTurnDone), 15.0)
            await asyncio.sleep(0.3)  # anything else of that turn arrives meanwhile
            assert len(listener.of(BotAudioStarted)) == 1 and len(listener.of(BotTurnDone)) == 1
            usage = listener.of(Usage)
            assert usage and usage[-1].split.input_speech == 25
            assert [u.total_tokens for u in usage] == sorted(u.total_tokens for u in usage)
            assert not listener.of(ConversationError) and conv.stats.turns == 1
        finally:
            await conv.close()
            await backend.aclose()
        (record,) = s.sessions
        audio_contents = record.output_counts["OutputContentStart"]
        assert audio_contents >= 4  # texts and at least two audio contents
        completions = record.output_counts["CompletionEnd"]
        assert completions == (1 if "one-completion" in quirks else 1)
