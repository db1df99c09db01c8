"""The RTVI protocol as a real aiortc caller sees it: 2.x and 1.0 negotiated by ``client-ready``.

A 2.x client (Pipecat's client-js 1.13 says 2.1.0) gets Pipecat's current messages; a 1.0 client
gets exactly the older set, which voicegate's own page reads. Every client request is answered,
and ``disconnect-bot`` ends the call the way Pipecat's SmallWebRTC server does: a ``peerLeft``
signalling message, the call gone, its pc_id refused if offered again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.call.rtvi import LEGACY_VERSION, PROTOCOL_VERSION
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient, OfferRefused

pytestmark = pytest.mark.timeout(120)


def _send(client: CallClient, type_: str, data: Any, id_: str | None = None) -> str:
    id_ = id_ or uuid.uuid4().hex[:8]
    client._channel.send(json.dumps({"label": "rtvi-ai", "type": type_, "id": id_, "data": data}))
    return id_


def _types(client: CallClient) -> list[str]:
    return [str(m.get("type")) for m in client.messages]


async def _answer(client: CallClient, id_: str) -> dict[str, Any]:
    """The server-response or error-response to request ``id_``."""
    async with asyncio.timeout(10):
        while True:
            for m in client.messages:
                if m.get("id") == id_ and m.get("type") in ("server-response", "error-response"):
                    return m
            client._message_event.clear()
            await client._message_event.wait()


async def _typed_turn(client: CallClient, text: str) -> list[str]:
    """The message types of the turn that answers typed ``text`` (up to its final text)."""
    start = len(client.messages)
    _send(client, "send-text", {"content": text, "options": {"run_immediately": True}})
    quoted = f"You typed: {text}"
    await client.wait_for("bot-transcription", 20, lambda m: m["data"]["text"] == quoted)
    return _types(client)[start:]


async def test_a_2x_client_gets_pipecats_current_messages() -> None:
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        client.rtvi_version = "2.1.0"
        try:
            async with asyncio.timeout(90):
                await client.connect()
                ready = await client.wait_for("bot-ready", 10)
                assert ready["data"]["version"] == PROTOCOL_VERSION

                start = len(client.messages)
                await _typed_turn(client, "hello world")
                await client.wait_for("bot-llm-stopped", 20)
                turn = _types(client)[start:]
                # One LLM and one TTS phase around the turn, closed once the bot stops speaking.
                assert [t for t in turn if t.startswith(("bot-llm-st", "bot-tts-st"))] == [
                    "bot-llm-started",
                    "bot-tts-started",
                    "bot-tts-stopped",
                    "bot-llm-stopped",
                ], turn
                assert turn.index("bot-stopped-speaking") < turn.index("bot-llm-stopped"), turn
                for kind in ("bot-llm-started", "bot-tts-started", "bot-tts-text", "bot-output"):
                    assert kind in turn, turn
                assert turn.index("bot-llm-started") < turn.index("bot-tts-text")
                assert turn.index("bot-tts-started") < turn.index("bot-tts-text")
                output = client.of_type("bot-output")[-1]["data"]
                assert output == {
                    "text": "You typed: hello world",
                    "spoken": True,
                    "aggregated_by": "sentence",
                }
                assert "bot-tts-stopped" in _types(client), _types(client)
                characters = [
                    m["data"] for m in client.of_type("metrics") if "characters" in m["data"]
                ]
                assert characters[-1]["characters"][0]["value"] == len(output["text"])

                # Requests: client-message answered or refused, an unknown type refused.
                about = await _answer(
                    client, _send(client, "client-message", {"t": "about", "d": {}})
                )
                assert about["type"] == "server-response" and about["data"]["t"] == "about"
                assert about["data"]["d"]["version"] == PROTOCOL_VERSION
                assert about["data"]["d"]["pc_id"] == client.pc_id
                ping = await _answer(
                    client, _send(client, "client-message", {"t": "ping", "d": [1]})
                )
                assert ping["data"] == {"t": "ping", "d": [1]}
                unknown = await _answer(client, _send(client, "client-message", {"t": "nope"}))
                assert unknown["type"] == "error-response" and "nope" in unknown["data"]["error"]
                dtmf = await _answer(client, _send(client, "dtmf", {"button": "1"}))
                assert dtmf["type"] == "error-response" and "dtmf" in dtmf["data"]["error"]

                # small-webrtc-transport's trackStatus needs no answer and gets none.
                refusals = len(client.of_type("error-response"))
                client._channel.send(
                    json.dumps(
                        {"type": "signalling", "message": {"type": "trackStatus",
                         "receiver_index": 0, "enabled": False}}
                    )
                )  # fmt: skip
                await _answer(client, _send(client, "client-message", {"t": "ping", "d": None}))
                assert len(client.of_type("error-response")) == refusals

                # append-to-context: user text is a typed turn, assistant text joins the history.
                appended = _send(
                    client, "append-to-context", {"role": "user", "content": "from context"}
                )
                await client.wait_for("append-to-context-result", 10, lambda m: m["id"] == appended)
                await client.wait_for(
                    "bot-output", 20, lambda m: m["data"]["text"] == "You typed: from context"
                )
                assistant = _send(
                    client, "append-to-context", {"role": "assistant", "content": "noted  it"}
                )
                await client.wait_for(
                    "append-to-context-result", 10, lambda m: m["id"] == assistant
                )
                history = app[SESSIONS][client.pc_id].conversation.stats.history
                # (the history merges same-role neighbours, as it does for the model's own text)
                assert history[-1][0] == "ASSISTANT", history
                assert history[-1][1].endswith(" noted it"), history
                bad = await _answer(
                    client, _send(client, "append-to-context", {"role": "system", "content": "x"})
                )
                assert bad["type"] == "error-response"

                # An error carries data.error (client-js) and voicegate's own fields.
                err_id = _send(client, "send-text", {"content": ""})
                err = await client.wait_for("error", 10, lambda m: m.get("id") == err_id)
                assert (
                    err["data"]["error"] == err["data"]["message"] and err["data"]["fatal"] is False
                )

                # disconnect-bot: peerLeft, the call ends, and its pc_id cannot come back.
                session = app[SESSIONS][client.pc_id]
                _send(client, "disconnect-bot", {})
                left = await client.wait_for("signalling", 10)
                assert left["message"] == {"type": "peerLeft"}
                await session.closed.wait()
                assert client.pc_id not in app[SESSIONS]
                again = CallClient(url)
                try:
                    with pytest.raises(OfferRefused) as refused:
                        await again.connect(restart_of=client.pc_id)
                    assert refused.value.status == 410, refused.value
                    assert refused.value.body["reason"] == "call_ended", refused.value.body
                finally:
                    await again.close()
                assert len(app[SESSIONS]) == 0
        finally:
            await client.close()


async def test_a_1_0_client_keeps_the_messages_it_knew() -> None:
    async with running_server(EchoBackend()) as (url, _app):
        client = CallClient(url)
        assert client.rtvi_version == LEGACY_VERSION
        try:
            async with asyncio.timeout(60):
                await client.connect()
                ready = await client.wait_for("bot-ready", 10)
                assert ready["data"]["version"] == LEGACY_VERSION

                turn = await _typed_turn(client, "hello world")
                assert "bot-llm-text" in turn and "bot-transcription" in turn, turn
                for newer in ("bot-output", "bot-llm-started", "bot-tts-started", "bot-tts-text"):
                    assert newer not in _types(client), _types(client)
                # Requests are answered whatever the version.
                about = await _answer(client, _send(client, "client-message", {"t": "about"}))
                assert about["data"]["d"]["version"] == LEGACY_VERSION
                assert await client.hangup() == 204
        finally:
            await client.close()
