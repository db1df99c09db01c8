"""The page's measuring mode (``?measure=1``) in real Debian Chromium: marker round trips.

Chromium's fake microphone plays the load tester's marker signal (voicegate.testing.signals);
voicegate runs its real ``bedrock`` backend against the Bedrock stand-in's ``echo`` brain, so
every marker the page sends comes back in the bot's audio. The page's AudioWorklet
(web/measure-worklet.js, loaded under the server's own Content-Security-Policy) must timestamp
the markers on both streams and pair them. Behaviour only: enough round trips, each positive
and under 2 s; how fast is benchmarks/mouth_to_ear.py's business (this test runs its voicegate
part once).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.mouth_to_ear import make_mic_wav, measure_call, voicegate_on_echo

from tests.support.browser import chromium, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

LISTEN_S = 10.0
MIN_ROUND_TRIPS = 5  # of about 9 markers sent once connected

WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} ${e.blockedURI}`);
});
"""


async def test_measuring_mode_times_marker_round_trips(tmp_path: Path) -> None:
    require_browser()
    wav = make_mic_wav(tmp_path / "markers.wav", seconds=20)
    async with (
        voicegate_on_echo(tmp_path) as srv,
        chromium(wav, loop_mic=True, bypass_csp=False) as ctx,
    ):
        page = await ctx.new_page()
        await page.add_init_script(WATCH_CSP)

        # Without the parameter the page measures nothing. The server's own policy is in force
        # (the browser is not told to bypass it): the worklet module must load as 'self'.
        res = await page.goto(f"{srv.base}/?raw=1", timeout=30_000)
        assert res is not None and "script-src 'self'" in res.headers["content-security-policy"]
        assert await page.evaluate("() => vg.measure") is None

        m = await measure_call(page, f"{srv.base}/?raw=1&measure=1", LISTEN_S)
        csp = await page.evaluate("() => window.__csp")
        await page.evaluate("() => vg.hangup()")
        await srv.wait_sessions(0)

    assert csp == [], csp
    assert m["errors"] == []
    # The microphone's markers come once a second, as the WAV has them.
    mic = m["micOnsets"]
    assert len(mic) >= LISTEN_S - 1, m
    gaps = [b - a for a, b in zip(mic, mic[1:], strict=False)]
    assert all(0.95 < g < 1.05 for g in gaps), gaps
    trips = m["mouthToEarMs"]
    assert len(trips) >= MIN_ROUND_TRIPS, (trips, srv.log_tail())
    assert all(0 < ms < 2000 for ms in trips), trips
    # Each trip pairs a bot onset with an earlier microphone onset.
    assert len(m["botOnsets"]) >= len(trips)
