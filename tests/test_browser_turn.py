"""Real Chromium through a real coturn: relay-only calls, refused credentials, the secret kept.

The relay runs on 127.0.0.1 with turn/turnserver-dev.conf (rewritten for a free port and this
test's secret). voicegate is a subprocess that gets the secret from VOICEGATE_TURN_SECRET, the
way a deployment passes it, and mints credentials from it; the page is opened with ``?relay=1``
so Chromium may only use relay candidates. That the call really went through the relay is read
from the page's own debug panel (``getStats()``' selected candidate pair).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    BOT_LINE,
    BOT_RMS_FLOOR,
    CONNECT_TIMEOUT_MS,
    USER_LINE,
    Server,
    chromium,
    make_speech_wav,
    require_browser,
    running_server,
    wait_js,
)
from tests.support.coturn import Coturn, running_coturn
from voicegate.signaling.turn import mint

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SECRET = "browser-turn-secret-7Kd2q"
SPOKEN = "Hello, what time is it?"
TURN_TIMEOUT_MS = 60_000  # echo backend: the spoken WAV plus its own playback


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPOKEN)


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    require_browser()  # start no relay for a test that is going to skip anyway
    with running_coturn(tmp_path, SECRET) as relay:
        yield relay


def relay_server(
    coturn: Coturn, log_dir: Path, secret: str = SECRET, *more: str
) -> Any:  # an async context manager yielding a Server
    return running_server(
        "echo",
        log_dir,
        ["--turn-url", f"turn:127.0.0.1:{coturn.port}?transport=udp", *more],
        env={"VOICEGATE_TURN_SECRET": secret},
    )


class Recorder:
    """Every HTTP body the page receives, captured by routing all requests through Playwright."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[str]] = {}

    async def install(self, page: Any) -> None:
        async def handle(route: Any) -> None:
            response = await route.fetch()
            body = await response.body()
            self.bodies.setdefault(route.request.url, []).append(body.decode("utf-8", "replace"))
            await route.fulfill(response=response, body=body)

        async with asyncio.timeout(10):
            await page.route("**/*", handle)

    def everything(self) -> str:
        return "\n".join(b for bodies in self.bodies.values() for b in bodies)


async def call_through_relay(page: Any, server: Server) -> dict[str, Any]:
    """Connect with ?relay=1, speak one turn, wait for the echo; the page's vg snapshot."""
    async with asyncio.timeout(30):
        await page.goto(f"{server.base}/?raw=1&relay=1", timeout=30_000)
    async with asyncio.timeout(10):
        await page.click("#connect", timeout=10_000)
    await wait_js(page, "vg.connected && vg.botReady", CONNECT_TIMEOUT_MS, "connect", server)
    await wait_js(
        page,
        f"document.querySelector({USER_LINE!r})?.textContent.trim()"
        f" && document.querySelector({BOT_LINE!r})?.textContent.trim()",
        TURN_TIMEOUT_MS,
        "a user and a bot transcript line",
        server,
    )
    await wait_js(page, f"vg.botPeak > {BOT_RMS_FLOOR}", TURN_TIMEOUT_MS, "bot audio", server)
    # The debug panel refreshes getStats() once a second; wait for a selected pair in it.
    await wait_js(page, "vg.stats.localCandidateType", 10_000, "the selected pair", server)
    async with asyncio.timeout(10):
        snapshot: dict[str, Any] = await page.evaluate(
            "() => ({stats: vg.stats, errors: vg.errors, events: vg.events, botPeak: vg.botPeak,"
            " pair: document.querySelector('#stat-pair').textContent,"
            " connection: document.querySelector('#stat-connection').textContent,"
            " timing: vg.timing})"
        )
    return snapshot


@pytest.mark.parametrize("server_relay_only", [False, True], ids=["browser-relay", "both-relay"])
async def test_relay_only_call_through_coturn(
    coturn: Coturn, spoken_wav: Path, tmp_path: Path, server_relay_only: bool
) -> None:
    """?relay=1 completes a spoken call whose selected pair is a TURN relay candidate."""
    more = ["--relay-only"] if server_relay_only else []
    async with relay_server(coturn, tmp_path, SECRET, *more) as server, chromium(spoken_wav) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        vg = await call_through_relay(page, server)
        assert vg["errors"] == [], vg["errors"]
        stats = vg["stats"]
        assert stats["localCandidateType"] == "relay", stats
        # voicegate relay-only offers only its relay address; otherwise Chromium's relay reaches
        # voicegate's loopback host candidate (a real NAT case is tests/test_nat.py).
        assert stats["remoteCandidateType"] == ("relay" if server_relay_only else "host"), stats
        assert stats["protocol"] == "udp", stats
        assert vg["pair"].startswith("relay ↔ "), vg["pair"]
        assert vg["connection"] == "connected (relay only)", vg["connection"]
        assert stats["packetsReceived"] > 0 and stats["packetsSent"] > 0, stats
        types = [e["type"] for e in vg["events"]]
        for kind in (
            "bot-ready",
            "user-transcription",
            "bot-transcription",
            "bot-started-speaking",
        ):
            assert kind in types, types
        assert vg["botPeak"] > BOT_RMS_FLOOR
        timing = vg["timing"]
        print(
            f"relay ({'both' if server_relay_only else 'browser'}): offer->connected "
            f"{timing['connected'] - timing['offerSent']:.0f} ms"
        )
        async with asyncio.timeout(10):
            await page.click("#hangup", timeout=10_000)
        await server.wait_sessions(0)


@pytest.mark.parametrize("failure", ["wrong-secret", "expired"])
async def test_refused_credentials_fail_the_relay_call(
    coturn: Coturn, spoken_wav: Path, tmp_path: Path, failure: str
) -> None:
    """coturn refuses the allocation, so a relay-only browser has nothing to offer and says so.

    ``wrong-secret``: voicegate mints with a secret coturn does not share. ``expired``: the right
    secret, but an expiry in the past (served in place of /api/ice-servers' answer).
    """
    secret = "not-the-coturn-secret" if failure == "wrong-secret" else SECRET
    async with relay_server(coturn, tmp_path, secret) as server, chromium(spoken_wav) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        if failure == "expired":
            username, credential = mint(SECRET, "web-late", -60)
            body = json.dumps(
                {
                    "iceServers": [
                        {
                            "urls": [f"turn:127.0.0.1:{coturn.port}?transport=udp"],
                            "username": username,
                            "credential": credential,
                        }
                    ]
                }
            )

            async def expired(route: Any) -> None:
                await route.fulfill(status=200, content_type="application/json", body=body)

            async with asyncio.timeout(10):
                await page.route("**/api/ice-servers", expired)
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1&relay=1", timeout=30_000)
        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.errors.length > 0", 30_000, "an error message", server)
        error = await page.text_content("#error", timeout=10_000)
        assert error is not None and "found no TURN relay" in error, error
        async with asyncio.timeout(10):
            connected = await page.evaluate("vg.timing.connected ?? null")
        assert connected is None
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        assert await server.sessions() == 0
    # It was coturn that said no (not an unreachable relay).
    assert "check_stun_auth: Cannot find credentials of user" in coturn.log(), coturn.log()[-2000:]


def _secret_variants(secret: str) -> list[str]:
    """The secret as text and in the encodings a leak would most likely take."""
    import base64

    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), raw.hex(), json.dumps(secret)[1:-1]]


async def test_turn_secret_never_reaches_the_browser_or_the_log(
    coturn: Coturn, spoken_wav: Path, tmp_path: Path
) -> None:
    """Page, script, /api/ice-servers, offer answer, data channel and a debug log: no secret."""
    async with (
        relay_server(coturn, tmp_path, SECRET, "--log-level", "debug") as server,
        chromium(spoken_wav) as ctx,
    ):
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        recorder = Recorder()
        await recorder.install(page)
        vg = await call_through_relay(page, server)
        assert vg["stats"]["localCandidateType"] == "relay", vg["stats"]
        async with asyncio.timeout(10):
            await page.click("#hangup", timeout=10_000)
        await server.wait_sessions(0)
        async with asyncio.timeout(10):
            html = await page.content()

    urls = list(recorder.bodies)
    for wanted in ("/api/ice-servers", "/api/offer", "/static/app.js"):
        assert any(u.endswith(wanted) for u in urls), (wanted, urls)
    # The browser did get credentials (so the check below looks at the right place).
    offer = json.loads(
        next(b for u, bs in recorder.bodies.items() if u.endswith("/api/offer") for b in bs)
    )
    assert re.fullmatch(r"\d+:pc-[0-9a-f]+", offer["iceServers"][0]["username"])
    received = {
        "http bodies": recorder.everything(),
        "data channel": json.dumps(vg["events"]),
        "page": html,
    }
    await server.aclose()  # flush and close the log before reading it whole
    received["server log"] = server.log_path.read_text(errors="replace")
    assert "listening" in received["server log"], received["server log"][-2000:]
    for where, text in received.items():
        for variant in _secret_variants(SECRET):
            assert variant not in text, f"the TURN secret ({variant!r}) is in the {where}"


@pytest.mark.bedrock
async def test_connect_time_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/browser_connect.py, one call per mode: the stand-in's greeting arrives over a
    host pair, a browser-relay pair and a relay pair on both sides (real bedrock backend)."""
    require_browser()
    from benchmarks.browser_connect import measure

    results = await measure(1)
    pairs = {mode: [tuple(r["pair"]) for r in rows] for mode, rows in results.items()}
    assert pairs == {
        "host": [("host", "host")],
        "relay": [("relay", "host")],
        "relay-both": [("relay", "relay")],
    }, pairs
    for rows in results.values():
        assert rows[0]["offer_connected_ms"] > 0 and rows[0]["click_audio_ms"] > 0, rows
