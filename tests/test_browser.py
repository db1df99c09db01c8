"""Real-browser end to end: headless Debian chromium loads web/, talks to voicegate, hangs up.

The microphone is Chromium's fake capture device fed from an espeak-ng WAV; the page runs with
``?raw=1`` so the browser's echo cancellation and gain control leave that speech alone. What the
user would see is asserted from the DOM (transcript lines, state line, error box); that the bot's
audio really arrived is asserted from the page's own WebAudio analyser on the remote track.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    BOT_LINE,
    BOT_RMS_FLOOR,
    CONNECT_TIMEOUT_MS,
    TURN_TIMEOUT_MS,
    USER_LINE,
    Server,
    chromium,
    make_speech_wav,
    require_browser,
    running_server,
    wait_js,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SPOKEN = "Hello, what time is it?"

BACKENDS = [
    pytest.param("echo", id="echo"),
    pytest.param("local", id="local", marks=pytest.mark.local),
]


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPOKEN)


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server(request.param, tmp_path) as srv:
        yield srv


async def texts(page: Any, selector: str) -> list[str]:
    async with asyncio.timeout(10):
        found: list[str] = await page.eval_on_selector_all(
            selector, "els => els.map(e => e.textContent.trim()).filter(Boolean)"
        )
    return found


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
async def test_spoken_call_through_the_page(server: Server, spoken_wav: Path) -> None:
    async with chromium(spoken_wav) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1", timeout=30_000)
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await page.is_disabled("#hangup", timeout=10_000)

        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(
            page, "vg.connected && vg.botReady", CONNECT_TIMEOUT_MS, "connect + bot-ready", server
        )
        assert await server.sessions() == 1

        # The whole turn: the user's words come back as a final user line, the bot answers.
        await wait_js(
            page,
            f"document.querySelector({USER_LINE!r})?.textContent.trim()"
            f" && document.querySelector({BOT_LINE!r})?.textContent.trim()",
            TURN_TIMEOUT_MS,
            "a user and a bot transcript line",
            server,
        )
        await wait_js(
            page, f"vg.botPeak > {BOT_RMS_FLOOR}", TURN_TIMEOUT_MS, "bot audio energy", server
        )
        await wait_js(page, "vg.state === 'listening'", TURN_TIMEOUT_MS, "end of bot turn", server)

        user_lines = await texts(page, USER_LINE)
        bot_lines = await texts(page, BOT_LINE)
        async with asyncio.timeout(10):
            vg = await page.evaluate(
                "() => ({events: vg.events.map(e => e.type), stats: vg.stats,"
                " botPeak: vg.botPeak, micPeak: vg.micPeak, errors: vg.errors})"
            )
        assert vg["errors"] == [], vg["errors"]
        if server.backend == "local":
            # Whisper heard the words, and the reply came through the real get_current_time tool.
            assert "time" in " ".join(user_lines).lower(), user_lines
            assert re.search(r"\d", " ".join(bot_lines)), bot_lines
            assert "llm-function-call" in vg["events"], vg["events"]
        else:
            assert re.search(r"echo turn 1\b", user_lines[0]), user_lines
        for kind in ("user-stopped-speaking", "bot-started-speaking", "bot-stopped-speaking"):
            assert kind in vg["events"], vg["events"]
        # The fake microphone really played into the call, over a host pair on loopback.
        assert vg["micPeak"] > 0.01, vg
        assert vg["stats"]["localCandidateType"] == "host", vg["stats"]
        assert vg["stats"]["packetsReceived"] > 0, vg["stats"]
        assert vg["stats"]["packetsSent"] > 0, vg["stats"]

        async with asyncio.timeout(10):
            await page.click("#hangup", timeout=10_000)
        await wait_js(page, "vg.lastHangupStatus !== null", 15_000, "DELETE answer", server)
        async with asyncio.timeout(10):
            status = await page.evaluate("vg.lastHangupStatus")
        assert status == 204, status
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await page.is_enabled("#connect", timeout=10_000)
        await server.wait_sessions(0)
        assert not [c for c in console if c.startswith("error")], console


@pytest.mark.parametrize("server", [pytest.param("echo", id="echo")], indirect=True)
async def test_unreachable_server_is_reported(server: Server, spoken_wav: Path) -> None:
    async with chromium(spoken_wav) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1", timeout=30_000)
        await server.aclose()  # the page is loaded; now the server goes away
        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.errors.length > 0", 20_000, "an error message", server)
        error = await page.text_content("#error", timeout=10_000)
        assert error is not None and "unreachable" in error, error
        assert await page.is_visible("#error", timeout=10_000)
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await page.is_enabled("#connect", timeout=10_000)


@pytest.mark.parametrize("server", [pytest.param("echo", id="echo")], indirect=True)
async def test_denied_microphone_is_reported(server: Server) -> None:
    async with chromium(None, allow_mic=False) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1", timeout=30_000)
        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.errors.length > 0", 20_000, "an error message", server)
        error = await page.text_content("#error", timeout=10_000)
        assert error is not None and "Microphone access was denied" in error, error
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await server.sessions() == 0


LIMITED = ["--max-sessions", "1", "--max-call-seconds", "8"]


@pytest.fixture
async def limited_server(tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server("echo", tmp_path, LIMITED) as srv:
        yield srv


async def test_refusal_and_fatal_server_error_are_reported(
    limited_server: Server, spoken_wav: Path
) -> None:
    """A 503 from the server shows its JSON reason; a fatal data-channel error ends the call."""
    server = limited_server
    async with chromium(spoken_wav) as ctx:
        first = ctx.pages[0] if ctx.pages else await ctx.new_page()
        second = await ctx.new_page()
        for page in (first, second):
            async with asyncio.timeout(30):
                await page.goto(f"{server.base}/?raw=1", timeout=30_000)
        async with asyncio.timeout(10):
            await first.click("#connect", timeout=10_000)
        await wait_js(first, "vg.connected", CONNECT_TIMEOUT_MS, "the first call", server)

        async with asyncio.timeout(10):
            await second.click("#connect", timeout=10_000)
        await wait_js(second, "vg.errors.length > 0", 20_000, "the refusal", server)
        error = await second.text_content("#error", timeout=10_000)
        assert error is not None and "HTTP 503" in error, error
        assert "limit of 1 concurrent calls" in error, error
        assert (await second.text_content("#state", timeout=10_000)) == "idle"

        # The first call hits --max-call-seconds: the server says so (fatal) and hangs up.
        await wait_js(first, "vg.errors.length > 0", 30_000, "the max-duration error", server)
        error = await first.text_content("#error", timeout=10_000)
        assert error is not None and "maximum duration" in error, error
        await wait_js(first, "vg.state === 'idle'", 10_000, "the page back to idle", server)
        assert await first.is_enabled("#connect", timeout=10_000)
        await server.wait_sessions(0)


async def test_transcript_and_state_follow_server_events(tmp_path: Path) -> None:
    """Partial and speculative text is replaced by final text; events drive the state line.

    The page is served by a real voicegate; the messages are fed through ``vg.receive``, the
    same function the data channel calls, because a real call cannot be made to produce interim
    user text or an interruption on cue.
    """
    require_browser()

    def msg(type_: str, **data: Any) -> str:
        return json.dumps({"label": "rtvi-ai", "type": type_, "id": "t", "data": data})

    async with running_server("echo", tmp_path) as server, chromium(None) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/", timeout=30_000)

        async def feed(raw: str) -> None:
            async with asyncio.timeout(10):
                await page.evaluate("raw => vg.receive(raw)", raw)

        async def line(n: int) -> tuple[str, str, str]:
            async with asyncio.timeout(10):
                got: list[str] = await page.evaluate(
                    """n => { const li = document.querySelectorAll('#transcript .line')[n];
                              return [li.className, li.querySelector('.said').textContent,
                                      li.querySelector('.pending').textContent]; }""",
                    n,
                )
            return got[0], got[1], got[2]

        async def state() -> str | None:
            text: str | None = await page.text_content("#state", timeout=10_000)
            return text

        await feed(msg("user-started-speaking"))
        assert await state() == "listening"
        await feed(msg("user-transcription", text="what", final=False))
        await feed(msg("user-transcription", text="what time", final=False))
        assert await line(0) == ("line user", "", "what time")
        await feed(msg("user-stopped-speaking"))
        assert await state() == "thinking"
        await feed(msg("user-transcription", text="What time is it?", final=True))
        assert await line(0) == ("line user", "What time is it?", "")

        await feed(msg("bot-llm-text", text="It is eight."))
        await feed(msg("bot-llm-text", text="Anything else?"))
        assert await line(1) == ("line bot", "", "It is eight. Anything else?")
        await feed(msg("bot-started-speaking"))
        assert await state() == "speaking"
        await feed(msg("bot-transcription", text="It is eight."))
        assert await line(1) == ("line bot", "It is eight.", "Anything else?")
        # Barge-in: the unspoken rest is dropped and the line is marked.
        await feed(msg("bot-interrupted"))
        assert await line(1) == ("line bot interrupted", "It is eight.", "")
        assert await state() == "listening"

        # Streamed chunks (LLM-style) are all replaced by the one final sentence they spell.
        await feed(msg("user-transcription", text="Thanks.", final=True))
        for chunk in ("You", "'re wel", "come."):
            await feed(msg("bot-llm-text", text=chunk))
        await feed(msg("bot-transcription", text="You're welcome."))
        assert await line(3) == ("line bot", "You're welcome.", "")
        await feed(msg("bot-stopped-speaking"))
        assert await state() == "listening"

        async with asyncio.timeout(10):
            transcript = await page.evaluate(
                "vg.transcript.map(e => [e.role, e.text, e.final, e.interrupted])"
            )
        assert transcript == [
            ["user", "What time is it?", True, False],
            ["bot", "It is eight.", True, True],
            ["user", "Thanks.", True, False],
            ["bot", "You're welcome.", True, False],
        ]
        assert await page.is_hidden("#error", timeout=10_000)
        await feed(msg("error", message="the model is busy", fatal=False))
        assert await page.text_content("#error", timeout=10_000) == (
            "Server error: the model is busy"
        )


@pytest.mark.parametrize("server", [pytest.param("echo", id="echo")], indirect=True)
async def test_relay_only_without_turn_is_explained(server: Server, spoken_wav: Path) -> None:
    """?relay=1 against a voicegate with no TURN server fails at once, saying why."""
    async with chromium(spoken_wav) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1&relay=1", timeout=30_000)
        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.errors.length > 0", 20_000, "an error message", server)
        error = await page.text_content("#error", timeout=10_000)
        assert error is not None and "found no TURN relay" in error, error
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await server.sessions() == 0
