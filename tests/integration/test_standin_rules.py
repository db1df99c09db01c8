"""Every rule the strict stand-in enforces, each violated through the real AWS SDK.

Each case opens a real ``aws_sdk_bedrock_runtime`` stream (CRT over HTTP/2 + TLS, SigV4-signed
events) to the stand-in, sends one documented violation built from the golden fixtures
(tests/golden) and checks the stand-in answers the way Bedrock does: a ``ValidationException``
(or, before the stream, ``AccessDeniedException``) with a Bedrock-shaped message. The list of
rules and their documentation sources is docs/standin.md, "Rules".
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.sdk_call import SILENCE, Call, tone
from voicegate import sonic as sonic
from voicegate.standin import StandIn

pytestmark = pytest.mark.bedrock

from aws_sdk_bedrock_runtime import models as m  # noqa: E402
from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient  # noqa: E402
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig  # noqa: E402
from smithy_aws_core.auth import SigV4AuthScheme  # noqa: E402
from smithy_core.shapes import ShapeID  # noqa: E402
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig  # noqa: E402

GOLDEN = Path(__file__).parents[1] / "golden"
NOVA2 = "amazon.nova-2-sonic-v1:0"
NOVA1 = "amazon.nova-sonic-v1:0"
TIMEOUT = 30
P = "7f9e2f4c-1b5a-4c8e-9d1f-2a6b3c4d5e6f"
MIC = "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
Event = dict[str, Any]


def golden(name: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Event:
    """A documented event from tests/golden; ``edit`` changes its body in place."""
    event: Event = json.loads((GOLDEN / f"{name}.json").read_text())["event"]
    event = copy.deepcopy(event)
    if edit is not None:
        edit(next(iter(event["event"].values())))
    return event


def text_block(role: str, text: str, name: str, interactive: bool = False) -> list[Event]:
    def start(b: dict[str, Any]) -> None:
        b.update(contentName=name, role=role, interactive=interactive)

    return [
        golden("content_start_text", start),
        golden("text_input", lambda b: b.update(contentName=name, content=text)),
        golden("content_end", lambda b: b.update(contentName=name)),
    ]


def session(**prompt: Any) -> list[Event]:
    """sessionStart, promptStart (edited by ``prompt``) and the system prompt."""
    start = golden("prompt_start", lambda b: b.update(prompt))
    if "tools" not in prompt:
        start["event"]["promptStart"].pop("toolConfiguration")
        start["event"]["promptStart"].pop("toolUseOutputConfiguration")
    else:
        start["event"]["promptStart"].pop("tools")
    return [golden("session_start"), start, *text_block("SYSTEM", "You are terse.", "system")]


def audio_start(**edit: Any) -> Event:
    return golden("content_start_audio", lambda b: b.update(edit))


def audio(pcm: bytes = SILENCE) -> Event:
    return golden("audio_input", lambda b: b.update(content=base64.b64encode(pcm).decode()))


def close() -> list[Event]:
    return [golden("content_end"), golden("prompt_end"), golden("session_end")]


LIVE: list[Event] = [*session(), audio_start(), audio()]
"""A session streaming audio: system prompt sent, audio content open."""


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[StandIn]:
    async with StandIn("scripted", tmp_path / "certs", idle_timeout=10) as s:
        yield s


Opener = Callable[..., Any]


@pytest.fixture
def open_call(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Opener:
    monkeypatch.setenv("SSL_CERT_FILE", str(standin.ca_file))

    async def open_call(
        model_id: str = NOVA2, region: str = "us-east-1", service: str = "bedrock"
    ) -> Call:
        config = await AsyncBedrockRuntimeConfig.resolve(
            region=region,
            endpoint_uri=standin.endpoint,
            transport=AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True)),
            aws_access_key_id=standin.access_key,
            aws_secret_access_key=standin.secret_key,
            auth_schemes={ShapeID("aws.auth#sigv4"): SigV4AuthScheme(service=service)},
        )
        client = AsyncBedrockRuntimeClient(config=config)
        stream = await client.invoke_model_with_bidirectional_stream(
            m.InvokeModelWithBidirectionalStreamOperationInput(model_id=model_id)
        )
        return Call(stream)

    return open_call


async def refused(
    open_call: Opener,
    events: list[Event],
    *,
    model_id: str = NOVA2,
    end_input: bool = False,
    before: Callable[[Call], Any] | None = None,
) -> BaseException | None:
    """Send ``events`` through the SDK; the error the stream ends with (None: a clean end)."""
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(model_id)
        try:
            await call.start()
            if before is not None:
                await before(call)
            for event in events:
                await call.send_bytes(json.dumps(event).encode())
            if end_input:
                async with asyncio.timeout(5):
                    await call.stream.input_stream.close()
            await call.ended.wait()
        finally:
            await call.abort()
    return call.error


def history(n: int, size: int = 8, prefix: str = "h") -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        out += text_block(("USER", "ASSISTANT")[i % 2], "x" * size, f"{prefix}{i}")
    return out


def _tools_json(*specs: dict[str, Any]) -> dict[str, Any]:
    return {
        "toolUseOutputConfiguration": {"mediaType": "application/json"},
        "toolConfiguration": {"tools": [{"toolSpec": s} for s in specs]},
    }


SPEC = {
    "name": "get_current_time",
    "description": "The time.",
    "inputSchema": {"json": json.dumps({"type": "object", "properties": {}})},
}


def _prompt(edit: Callable[[dict[str, Any]], None]) -> list[Event]:
    events = session()
    edit(events[1]["event"]["promptStart"])
    return events


def _session_start(edit: Callable[[dict[str, Any]], None]) -> list[Event]:
    events = session()
    edit(events[0]["event"]["sessionStart"])
    return events


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = body
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = body
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _long_history() -> list[Event]:
    out: list[Event] = []
    for i in range(21):  # 21 messages of 2 x 1024 bytes: 43,008 bytes > 40 KB
        name = f"h{i}"
        out += [
            golden(
                "content_start_text",
                lambda b, n=name, i=i: b.update(contentName=n, role=("USER", "ASSISTANT")[i % 2]),
            ),
            golden("text_input", lambda b, n=name: b.update(contentName=n, content="y" * 1024)),
            golden("text_input", lambda b, n=name: b.update(contentName=n, content="y" * 1024)),
            golden("content_end", lambda b, n=name: b.update(contentName=n)),
        ]
    return out


def _open_history() -> list[Event]:
    block = text_block("USER", "hello", "h0")
    return [*session(), *block[:2], audio_start()]


RULES: dict[str, tuple[list[Event], str]] = {
    # -- order ----------------------------------------------------------------------------
    "first-event-not-sessionStart": (session()[1:], "the first event must be sessionStart"),
    "sessionStart-twice": ([golden("session_start"), *session()], "sessionStart may be sent only"),
    "promptStart-twice": ([*session(), session()[1]], "one promptStart"),
    "content-before-promptStart": (
        [golden("session_start"), *text_block("SYSTEM", "x", "s")],
        "contentStart sent before promptStart",
    ),
    "no-system-prompt-audio-first": (
        [*session()[:2], audio_start(), audio()],
        "the system prompt must come before the audio content",
    ),
    "no-system-prompt-history-first": (
        [*session()[:2], *text_block("USER", "hi", "h")],
        "the first content must be the system prompt",
    ),
    "system-prompt-interactive": (
        [*session()[:2], *text_block("SYSTEM", "x", "s", interactive=True)],
        "the first content must be the system prompt (TEXT, role SYSTEM, interactive false)",
    ),
    "system-prompt-after-audio": (
        [*LIVE, *text_block("SYSTEM", "again", "s2")],
        "the system prompt may be sent only once",
    ),
    "history-after-audio-started": (
        [*LIVE, *text_block("USER", "late", "h0")],
        "chat history may be sent only once, after the system prompt and before the audio",
    ),
    "history-sent-twice": (
        [*session(), *history(2), audio_start(), audio(), *history(2, prefix="again")],
        "chat history may be sent only once",
    ),
    "content-start-while-history-open": (_open_history(), "while content 'h0' is still open"),
    "contentName-reused": (
        [*session(), *text_block("USER", "a", "system")],
        "contentName 'system' is already in use",
    ),
    "unknown-promptName": (
        [*session(), audio_start(promptName="another-prompt")],
        "unknown promptName 'another-prompt'",
    ),
    "second-audio-content": ([*LIVE, audio_start(contentName="mic-2")], "one audio content"),
    "audio-after-its-contentEnd": (
        [*LIVE, golden("content_end"), audio()],
        "audioInput for content",
    ),
    "promptEnd-with-audio-open": ([*LIVE, golden("prompt_end")], "promptEnd sent while contents"),
    "sessionEnd-without-promptEnd": (
        [*LIVE, golden("content_end"), golden("session_end")],
        "sessionEnd must follow promptEnd",
    ),
    "sessionEnd-with-audio-open": ([*LIVE, golden("session_end")], "sessionEnd must follow"),
    "content-after-promptEnd": (
        [*LIVE, golden("content_end"), golden("prompt_end"), *text_block("USER", "x", "u")],
        "contentStart sent after promptEnd",
    ),
    # -- history ----------------------------------------------------------------------------
    "history-starts-with-assistant": (
        [*session(), *text_block("ASSISTANT", "hi", "h0")],
        "the chat history must start with a USER message",
    ),
    "history-not-alternating": (
        [*session(), *text_block("USER", "a", "h0"), *text_block("USER", "b", "h1")],
        "roles must alternate between USER and ASSISTANT",
    ),
    "history-role-tool": (
        [*session(), *text_block("TOOL", "x", "h0")],
        "role TOOL is only for TOOL contents",
    ),
    "history-message-over-1-KB": (
        [*session(), *history(1, size=1025)],
        "at most 1024 bytes (got 1025)",
    ),
    "history-over-40-KB": ([*session(), *_long_history()], "at most 40960 bytes in all"),
    # -- roles and interactive flags --------------------------------------------------------
    "audio-role-assistant": (
        [*session(), audio_start(role="ASSISTANT")],
        "an AUDIO content must be USER",
    ),
    "audio-not-interactive": (
        [*session(), audio_start(interactive=False)],
        "an AUDIO content must be interactive",
    ),
    "tool-content-role-user": (
        [*LIVE, golden("content_start_tool", lambda b: b.update(role="USER"))],
        "a TOOL content must be TOOL",
    ),
    "tool-content-interactive": (
        [*LIVE, golden("content_start_tool", lambda b: b.update(interactive=True))],
        "a TOOL content is not interactive",
    ),
    "interactive-text-role-assistant": (
        [*LIVE, *text_block("ASSISTANT", "x", "t", interactive=True)],
        "interactive text must have role USER",
    ),
    "interactive-text-after-audio-ended": (
        [*LIVE, golden("content_end"), *text_block("USER", "typed", "t", interactive=True)],
        "interactive text needs the audio content to be streaming",
    ),
    "speech-prompt-after-history": (
        [*session(), *history(2), *text_block("SYSTEM_SPEECH", "speech prompt", "sp")],
        "the speech prompt (SYSTEM_SPEECH) may be sent once, right after the system prompt",
    ),
    "speech-prompt-twice": (
        [
            *session(),
            *text_block("SYSTEM_SPEECH", "one", "sp1"),
            *text_block("SYSTEM_SPEECH", "two", "sp2"),
        ],
        "the speech prompt (SYSTEM_SPEECH) may be sent once",
    ),
    # -- configuration blocks, field names, types ---------------------------------------------
    "unknown-top-level-field": (
        [{**golden("session_start"), "extra": 1}, *session()[1:]],
        "#: extraneous key [extra] is not permitted",
    ),
    "misspelled-turnDetectionConfig": (
        _session_start(_set("turnDetectionConfig", {"endpointingSensitivity": "HIGH"})),
        "extraneous key [turnDetectionConfig] is not permitted",
    ),
    "unknown-field-in-contentStart": (
        [*session(), audio_start(unexpected=True)],
        "extraneous key [unexpected]",
    ),
    "no-inferenceConfiguration": (
        _session_start(_drop("inferenceConfiguration")),
        "required key [inferenceConfiguration] not found",
    ),
    "no-textOutputConfiguration": (
        _prompt(_drop("textOutputConfiguration")),
        "required key [textOutputConfiguration] not found",
    ),
    "no-audioOutputConfiguration": (
        _prompt(_drop("audioOutputConfiguration")),
        "required key [audioOutputConfiguration] not found",
    ),
    "no-textInputConfiguration": (
        [
            *session()[:2],
            golden("content_start_text", lambda b: b.pop("textInputConfiguration")),
        ],
        "required key [textInputConfiguration] not found",
    ),
    "no-toolUseOutputConfiguration-with-tools": (
        _prompt(lambda b: b.update(toolConfiguration={"tools": [{"toolSpec": SPEC}]})),
        "required key [toolUseOutputConfiguration] not found",
    ),
    "no-interactive-flag": (
        [*session(), audio_start(), audio()][:-2]
        + [golden("content_start_audio", lambda b: b.pop("interactive"))],
        "required key [interactive] not found",
    ),
    "topP-not-a-number": (
        _session_start(_set("inferenceConfiguration/topP", "0.9")),
        "topP: expected type: Number, found: String",
    ),
    "temperature-above-1": (
        _session_start(_set("inferenceConfiguration/temperature", 1.5)),
        "temperature: 1.5 is not less or equal to 1",
    ),
    "maxTokens-zero": (
        _session_start(_set("inferenceConfiguration/maxTokens", 0)),
        "maxTokens: 0 is not greater or equal to 1",
    ),
    "endpointingSensitivity-unknown": (
        _session_start(_set("turnDetectionConfiguration/endpointingSensitivity", "MAX")),
        '"MAX" is not a valid enum value',
    ),
    # -- voices, audio formats, chunks ----------------------------------------------------
    "voice-not-nova2": (
        _prompt(_set("audioOutputConfiguration/voiceId", "greta")),
        'voiceId: "greta" is not a valid enum value',
    ),
    "voice-unknown": (
        _prompt(_set("audioOutputConfiguration/voiceId", "alexa")),
        'voiceId: "alexa" is not a valid enum value',
    ),
    "output-rate-44100": (
        _prompt(_set("audioOutputConfiguration/sampleRateHertz", 44100)),
        "sampleRateHertz: 44100 is not a valid enum value",
    ),
    "output-stereo": (
        _prompt(_set("audioOutputConfiguration/channelCount", 2)),
        "channelCount: 2 is not a valid enum value",
    ),
    "input-rate-48000": (
        [
            *session(),
            golden("content_start_audio", _set("audioInputConfiguration/sampleRateHertz", 48000)),
        ],
        "sampleRateHertz: 48000 is not a valid enum value",
    ),
    "input-8-bit": (
        [
            *session(),
            golden("content_start_audio", _set("audioInputConfiguration/sampleSizeBits", 8)),
        ],
        "sampleSizeBits: 8 is not a valid enum value",
    ),
    "input-not-lpcm": (
        [
            *session(),
            golden("content_start_audio", _set("audioInputConfiguration/mediaType", "audio/opus")),
        ],
        '"audio/opus" is not a valid enum value',
    ),
    "audio-chunk-odd-bytes": ([*LIVE, audio(b"\x00" * 1023)], "whole 16-bit samples"),
    "audio-chunk-empty": (
        [*LIVE, golden("audio_input", lambda b: b.update(content=""))],
        "content: expected minLength: 1",
    ),
    "audio-chunk-not-base64": (
        [*LIVE, golden("audio_input", lambda b: b.update(content="not base64!"))],
        "content: is not valid base64",
    ),
    # -- tools ----------------------------------------------------------------------------
    "tool-name-with-spaces": (
        _prompt(lambda b: b.update(_tools_json({**SPEC, "name": "get time"}))),
        "does not match pattern",
    ),
    "tool-without-description": (
        _prompt(
            lambda b: b.update(_tools_json({k: v for k, v in SPEC.items() if k != "description"}))
        ),
        "required key [description] not found",
    ),
    "tool-schema-not-json": (
        _prompt(lambda b: b.update(_tools_json({**SPEC, "inputSchema": {"json": "{oops"}}))),
        "inputSchema/json: is not valid JSON",
    ),
    "tool-schema-as-object": (
        _prompt(
            lambda b: b.update(_tools_json({**SPEC, "inputSchema": {"json": {"type": "object"}}}))
        ),
        "inputSchema/json: expected type: String, found: JSONObject",
    ),
    "tool-schema-not-an-object": (
        _prompt(lambda b: b.update(_tools_json({**SPEC, "inputSchema": {"json": "[1]"}}))),
        "must hold a JSON object",
    ),
    "tool-names-duplicated": (
        _prompt(lambda b: b.update(_tools_json(SPEC, SPEC))),
        "duplicate tool name [get_current_time]",
    ),
    "tool-list-empty": (
        _prompt(lambda b: b.update(_tools_json())),
        "expected minimum item count: 1",
    ),
    "toolChoice-two-choices": (
        _prompt(
            lambda b: (
                b.update(_tools_json(SPEC))
                or b["toolConfiguration"].update(toolChoice={"auto": {}, "any": {}})
            )
        ),
        "toolChoice: expected exactly one of [auto, any, tool]",
    ),
    "toolChoice-unknown-tool": (
        _prompt(
            lambda b: (
                b.update(_tools_json(SPEC))
                or b["toolConfiguration"].update(toolChoice={"tool": {"name": "order_pizza"}})
            )
        ),
        "[order_pizza] is not a configured tool",
    ),
    "toolResult-for-unknown-toolUseId": (
        [*LIVE, golden("content_start_tool")],
        "Tool Response parsing error: toolUseId",
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
async def test_violation_is_a_validation_exception(open_call: Opener, rule: str) -> None:
    events, fragment = RULES[rule]
    error = await refused(open_call, events)
    assert isinstance(error, m.ValidationException), (rule, error)
    assert fragment in str(error), str(error)
    message = str(error)
    assert "please reformat your input" in message or "try again" in message or "Tool " in message


async def test_nothing_may_follow_sessionEnd(open_call: Opener, standin: StandIn) -> None:
    error = await refused(open_call, [*LIVE, *close(), audio()], end_input=True)
    assert isinstance(error, m.ValidationException)
    assert "no event may follow sessionEnd" in str(error)
    assert not standin.sessions[0].closed_in_order()


async def test_input_ending_without_sessionEnd_is_refused(
    open_call: Opener, standin: StandIn
) -> None:
    error = await refused(open_call, LIVE, end_input=True)
    assert isinstance(error, m.ValidationException)
    assert "the input stream ended before sessionEnd" in str(error)
    record = standin.sessions[0]
    assert record.outcome == "exception:validationException" and not record.closed_in_order()


async def test_the_documented_close_is_a_clean_end(open_call: Opener, standin: StandIn) -> None:
    error = await refused(open_call, [*LIVE, *close()], end_input=True)
    assert error is None
    assert standin.sessions[0].closed_in_order()


@pytest.mark.parametrize(
    ("model_id", "events", "fragment"),
    [
        (
            NOVA1,
            session(),
            "extraneous key [turnDetectionConfiguration]",
        ),
        (
            NOVA1,
            [
                *_session_start(_drop("turnDetectionConfiguration")),
                *text_block("SYSTEM_SPEECH", "speech prompt", "sp"),
            ],
            'role: "SYSTEM_SPEECH" is not a valid enum value',
        ),
        (
            NOVA1,
            _session_start(_drop("turnDetectionConfiguration"))[:1]
            + _prompt(_set("audioOutputConfiguration/voiceId", "tina"))[1:],
            'voiceId: "tina" is not a valid enum value',
        ),
        (
            NOVA1,
            [
                *_session_start(_drop("turnDetectionConfiguration")),
                golden(
                    "content_start_audio", _set("audioInputConfiguration/sampleRateHertz", 8000)
                ),
            ],
            "sampleRateHertz: 8000 is not a valid enum value",
        ),
    ],
    ids=["turn-detection", "speech-prompt", "voice-tina", "input-8-kHz"],
)
async def test_nova_sonic_v1_rules(
    open_call: Opener, model_id: str, events: list[Event], fragment: str
) -> None:
    error = await refused(open_call, events, model_id=model_id)
    assert isinstance(error, m.ValidationException), error
    assert fragment in str(error)


async def test_what_each_model_documents_is_accepted(open_call: Opener, standin: StandIn) -> None:
    v1 = [
        *_session_start(_drop("turnDetectionConfiguration"))[:1],
        *_prompt(_set("audioOutputConfiguration/voiceId", "greta"))[1:],
        audio_start(),
        audio(),
        *close(),
    ]
    # The chat-history page's own example marks history messages interactive: accepted too.
    # No AWS page caps the number of messages (only their bytes): 60 are fine.
    documented_history = [
        text_block(("USER", "ASSISTANT")[i % 2], "earlier", f"h{i}", interactive=i % 2 == 1)
        for i in range(60)
    ]
    nova2 = [
        *_prompt(_set("audioOutputConfiguration/voiceId", "tina")),
        *text_block("SYSTEM_SPEECH", "speech prompt", "speech"),
        *[event for block in documented_history for event in block],
        golden("content_start_audio", _set("audioInputConfiguration/sampleRateHertz", 24000)),
        audio(),
        *text_block("USER", "typed while talking", "typed", interactive=True),
        *close(),
    ]
    assert await refused(open_call, v1, model_id=NOVA1, end_input=True) is None
    assert await refused(open_call, nova2, end_input=True) is None
    assert all(r.closed_in_order() for r in standin.sessions)
    assert standin.sessions[1].event_counts["contentStart"] == 1 + 1 + 60 + 1 + 1


# -- tool results (need a real toolUse from the scripted brain) ------------------------------


async def _tool_use(call: Call) -> str:
    events = _prompt(lambda b: b.update(_tools_json(SPEC)))
    events[3] = golden(
        "text_input", lambda b: b.update(contentName="system", content="scenario:tool")
    )
    for event in [*events, audio_start()]:
        await call.send_bytes(json.dumps(event).encode())
    for _ in range(10):
        await call.send_bytes(json.dumps(audio(tone())).encode())
    for _ in range(12):
        await call.send_bytes(json.dumps(audio()).encode())
    use = await call.wait_for(lambda e: isinstance(e, sonic.ToolUse))
    assert isinstance(use, sonic.ToolUse)
    return use.tool_use_id


def _result(use: str, *contents: str, end: bool = True) -> list[Event]:
    def start(b: dict[str, Any]) -> None:
        b["toolResultInputConfiguration"]["toolUseId"] = use

    events = [golden("content_start_tool", start)]
    events += [golden("tool_result", lambda b, c=c: b.update(content=c)) for c in contents]
    if end:
        events.append(
            golden(
                "content_end",
                lambda b: b.update(contentName=events[0]["event"]["contentStart"]["contentName"]),
            )
        )
    return events


@pytest.mark.parametrize(
    ("contents", "fragment"),
    [
        (('"12:34"',), "the toolResult content must be a JSON object"),
        (("[1, 2]",), "the toolResult content must be a JSON object"),
        (("12:34 UTC",), "the toolResult content is not JSON"),
        ((), "the tool result content ended without a toolResult"),
    ],
    ids=["json-string", "json-array", "not-json", "no-result"],
)
async def test_tool_result_shape(
    open_call: Opener, contents: tuple[str, ...], fragment: str
) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.start()
            use = await _tool_use(call)
            for event in _result(use, *contents):
                await call.send_bytes(json.dumps(event).encode())
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert str(call.error).startswith("Tool Response parsing error")
    assert fragment in str(call.error)


async def test_a_tool_use_is_answered_once(open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.start()
            use = await _tool_use(call)
            for event in _result(use, '{"time": "12:34"}'):
                await call.send_bytes(json.dumps(event).encode())
            await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
            again = _result(use, '{"time": "12:35"}')
            again[0]["event"]["contentStart"]["contentName"] = "second-answer"
            for event in again[:1]:
                await call.send_bytes(json.dumps(event).encode())
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert "was already answered" in str(call.error)


# -- SigV4 scope ------------------------------------------------------------------------------


async def test_signature_for_another_region_is_refused(open_call: Opener, standin: StandIn) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(region="us-west-2")
        try:
            with pytest.raises(m.AccessDeniedException) as info:
                await call.start()
        finally:
            await call.abort()
    assert "Credential should be scoped to a valid region, not 'us-west-2'" in str(info.value)
    assert standin.rejections[0].status == 403 and not standin.sessions


async def test_signature_for_another_service_is_refused(
    open_call: Opener, standin: StandIn
) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(service="bedrock-runtime")
        try:
            with pytest.raises(m.AccessDeniedException) as info:
                await call.start()
        finally:
            await call.abort()
    assert "Credential should be scoped to correct service: 'bedrock'" in str(info.value)


async def test_the_standin_serves_its_own_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StandIn("scripted", tmp_path / "certs", region="us-west-2") as s:
        assert s.client_env()["AWS_REGION"] == "us-west-2"
        monkeypatch.setenv("SSL_CERT_FILE", str(s.ca_file))
        config = await AsyncBedrockRuntimeConfig.resolve(
            region="us-west-2",
            endpoint_uri=s.endpoint,
            transport=AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True)),
            aws_access_key_id=s.access_key,
            aws_secret_access_key=s.secret_key,
        )
        async with asyncio.timeout(TIMEOUT):
            stream = await AsyncBedrockRuntimeClient(
                config=config
            ).invoke_model_with_bidirectional_stream(
                m.InvokeModelWithBidirectionalStreamOperationInput(model_id=NOVA2)
            )
            call = Call(stream)
            try:
                await call.start()
                for event in [*LIVE, *close()]:
                    await call.send_bytes(json.dumps(event).encode())
                await call.stream.input_stream.close()
                await call.ended.wait()
            finally:
                await call.abort()
        assert call.error is None and s.sessions[0].region == "us-west-2"


# -- limits -----------------------------------------------------------------------------------


def test_default_limits_are_bedrocks(tmp_path: Path) -> None:
    s = StandIn("scripted", tmp_path)
    assert s.session_limit == 480.0  # "remains open for 8 minutes"
    assert s.idle_timeout == 60.0


async def test_no_audio_once_audio_streams_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text keeps arriving, but the audio stopped: Bedrock's standard timeout ends it."""
    async with StandIn("scripted", tmp_path / "certs", idle_timeout=0.6) as s:
        monkeypatch.setenv("SSL_CERT_FILE", str(s.ca_file))
        config = await AsyncBedrockRuntimeConfig.resolve(
            region="us-east-1",
            endpoint_uri=s.endpoint,
            transport=AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True)),
            aws_access_key_id=s.access_key,
            aws_secret_access_key=s.secret_key,
        )
        async with asyncio.timeout(TIMEOUT):
            stream = await AsyncBedrockRuntimeClient(
                config=config
            ).invoke_model_with_bidirectional_stream(
                m.InvokeModelWithBidirectionalStreamOperationInput(model_id=NOVA2)
            )
            call = Call(stream)
            try:
                await call.start()
                for event in LIVE:
                    await call.send_bytes(json.dumps(event).encode())
                i = 0
                while not call.ended.is_set():  # interactive text every 0.2 s, but no audio
                    for event in text_block("USER", "still here", f"t{i}", interactive=True):
                        await call.send_bytes(json.dumps(event).encode())
                    i += 1
                    await asyncio.wait({asyncio.ensure_future(call.ended.wait())}, timeout=0.2)
            finally:
                await call.abort()
    assert isinstance(call.error, m.ModelTimeoutException)
    assert "Timed out waiting for input events" in str(call.error)
    assert i >= 2
