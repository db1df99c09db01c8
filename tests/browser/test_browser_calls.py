"""The call inspector (/calls) in real Chromium, under the page's strict CSP: after a real call,
the list shows it and one click opens its timeline (transcript beside the turn's latency bars).
Screenshots at phone and desktop width go to the test's directory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.browser import chromium, running_server
from tests.support.receivers import Collector, Receiver, collecting, receiving
from voicegate.testing.client import CallClient, load_wav

pytestmark = pytest.mark.browser

ADMIN = "inspector-token-0123456789"


async def test_calls_page_lists_and_opens_a_call(
    speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN)
    speech = load_wav(speech_wav("hello there, this is a test of the call inspector"))
    args = ["--admin-token-file", str(token_file), "--call-store", f"sqlite:{tmp_path / 'c.db'}"]
    async with running_server("echo", tmp_path, args) as server:
        client = CallClient(server.base)
        try:
            async with asyncio.timeout(40):
                answer = await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for("user-transcription", 15, lambda m: m["data"]["final"])
                await client.wait_for("bot-stopped-speaking", 20)
                assert await client.hangup() == 204
        finally:
            await client.close()
        pc_id = answer["pc_id"]
        await _listed(server.base, pc_id)
        async with chromium(None, bypass_csp=False) as ctx:
            page = await ctx.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            for width, height in ((1280, 900), (390, 844)):
                await page.set_viewport_size({"width": width, "height": height})
                await page.goto(f"{server.base}/calls")
                await page.fill("#token", ADMIN)
                await page.click("#load")
                await page.locator(f'#calls tr[data-call-id="{pc_id}"]').click()
                await page.locator("#timeline li.user").first.wait_for(timeout=10_000)
                user_text = await page.locator("#timeline li.user .say").first.text_content()
                assert user_text is not None and "echo turn 1" in user_text
                assert await page.locator("#timeline li.turn .bar .model").count() == 1
                summary = await page.locator("#summary").text_content()
                assert summary is not None and "hangup" in summary
                await page.screenshot(path=str(tmp_path / f"calls-{width}.png"), full_page=True)
                # Nothing runs off the side on a phone: the page is as wide as the screen.
                scroll_width = await page.evaluate("document.documentElement.scrollWidth")
                assert scroll_width <= width
            # A wrong token is refused with the server's reason, shown to the user.
            await page.fill("#token", "wrong-token-not-the-admin")
            await page.click("#load")
            await page.locator("#error").wait_for(state="visible", timeout=10_000)
            error = await page.locator("#error").text_content()
            assert error is not None and "401" in error and "admin token" in error
            csp = [p for p in problems if "Content Security Policy" in p]
            assert not csp, csp


async def _listed(base: str, pc_id: str) -> None:
    """Until the server (another process) has written the call's record: it does so off the
    audio path, just after the hang-up, and has no readiness pipe to tell us."""
    import aiohttp

    async with aiohttp.ClientSession() as http, asyncio.timeout(15):
        while True:
            async with http.get(
                f"{base}/api/calls", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as res:
                body = await res.json()
            if any(c["call_id"] == pc_id and c["end_reason"] for c in body["calls"]):
                return
            await asyncio.sleep(0.1)  # another process's bookkeeping, not an audio path


@pytest.mark.local
async def test_offline_brain_call_reaches_webhook_history_trace_and_page(
    speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    """One call with the embedded offline brain: a verified ``call.ended`` webhook with its
    transcript, its record in /api/calls/{id}, its trace at an OTLP collector, and the /calls
    page showing it with its tool call and its recording playable."""
    import base64
    import os

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "whsec").write_text(secret)
    (tmp_path / "admin-token").write_text(ADMIN)
    speech = load_wav(speech_wav("Hello, what time is it?"))
    receiver, collector = Receiver(), Collector()
    async with receiving(receiver) as hook, collecting(collector) as otlp:
        args = [
            "--admin-token-file", str(tmp_path / "admin-token"),
            "--call-store", f"sqlite:{tmp_path / 'c.db'}",
            "--webhook-url", hook, "--webhook-secret-file", str(tmp_path / "whsec"),
            "--record-dir", str(tmp_path / "rec"),
        ]  # fmt: skip
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        async with running_server("local", tmp_path, args, env) as server:
            client = CallClient(server.base)
            client.offer_fields["record"] = True
            try:
                async with asyncio.timeout(90):
                    answer = await client.connect()
                    await client.wait_for("bot-ready", 30)
                    client.mic.play(speech)
                    await client.wait_for("user-transcription", 30, lambda m: m["data"]["final"])
                    await client.wait_for("bot-stopped-speaking", 30)
                    assert await client.hangup() == 204
            finally:
                await client.close()
            pc_id = answer["pc_id"]
            await receiver.wait(lambda ev: any(e["type"] == "call.ended" for e in ev), 30)
            await _listed(server.base, pc_id)
            async with chromium(None, bypass_csp=False) as ctx:
                page = await ctx.new_page()
                await page.goto(f"{server.base}/calls#call={pc_id}")
                await page.fill("#token", ADMIN)
                await page.click("#load")
                await page.locator(f'#calls tr[data-call-id="{pc_id}"]').click()
                await page.locator("#timeline li.user").first.wait_for(timeout=10_000)
                said = await page.locator("#timeline li.user .say").first.text_content()
                assert said is not None and "time" in said.lower()
                marks = await page.locator("#timeline li.mark .say").all_text_contents()
                assert any(m.startswith("Tool ") for m in marks), marks
                await page.locator("#recording audio").first.wait_for(timeout=10_000)
                assert await page.locator("#recording audio").count() == 2
                await page.screenshot(path=str(tmp_path / "calls-local.png"), full_page=True)
            await collector.wait_for_span("voicegate.call")
    headers, body = next((h, b) for h, b in receiver.got if b'"type":"call.ended"' in b)
    ended = Webhook(secret).verify(body, headers)
    assert ended["data"]["call_id"] == pc_id
    assert any("time" in t["text"].lower() for t in ended["data"]["transcript"])
    assert ended["data"]["tool_call_events"], ended["data"]
    assert ended["data"]["recording"].endswith(f"{pc_id}/")
    names = {s.name for s in collector.spans}
    assert {"voicegate.call", "voicegate.turn", "voicegate.model_stream"} <= names
    assert any(n.startswith("execute_tool ") for n in names), names
