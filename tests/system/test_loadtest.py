"""``voicegate loadtest`` against a real voicegate on loopback, and the stand-in's turns brain.

Behaviours covered:
- the markers workload with 2 calls through a per-chunk echo reports 2 calls ok, marker round
  trips and received frames;
- the turns workload through the turns brain (fixed think time) answers every turn once, never
  sooner than the brain's think time, and reports the gateway's own share;
- --relay takes the TURN server from GET /api/ice-servers and goes through a real coturn;
- the command fails clearly (exit 1, a reason per call) on an unreachable URL, on a 401 (a server
  with an auth secret, no token) and on a refused call (503 at --max-sessions 1 with 2 calls),
  and exits 2 on a URL that is not one; its --json holds the documented summary fields;
- the turns brain answers each turn once, after it ends, with a finite reply and a transcript.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.coturn import running_coturn
from tests.support.server import running_server
from voicegate.backends.base import BackendStream
from voicegate.sonic import events as sonic
from voicegate.standin.brains import EchoBrain
from voicegate.standin.scripted_turns import TurnsBrain
from voicegate.testing.loadtest import LoadOptions, run

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-test-secret-of-at-least-32-characters!!"


class EchoBrainBackend:
    """Every chunk straight back (the stand-in's echo brain, in process): what markers need."""

    name = "echo-brain"

    input_rate = 16000

    async def open(self) -> BackendStream:
        return EchoBrain()

    async def aclose(self) -> None:
        return None


class TurnsBackend:
    name = "turns"
    input_rate = 16000

    async def open(self) -> BackendStream:
        return TurnsBrain(end_silence_s=0.3, think_s=0.2)

    async def aclose(self) -> None:
        return None


async def test_markers_two_calls_report_round_trips_and_frames() -> None:
    async with running_server(EchoBrainBackend()) as (url, _):
        doc = await run(LoadOptions(url, calls=2, duration=4.0, warmup=1.0, ramp=20.0))
    s = doc["summary"]
    assert (s["calls_ok"], s["calls_failed"]) == (2, 0), s["failures"]
    assert s["rtt_ms"]["n"] >= 4 and s["rtt_ms"]["p50"] is not None
    assert s["rtt_ms"]["p50"] <= s["rtt_ms"]["p95"] <= s["rtt_ms"]["p99"]
    assert s["markers_sent"] >= 4
    assert s["fps_min"] is not None and s["fps_min"] > 0
    assert s["connect_ms"]["p50"] is not None and s["connect_ms"]["max"] is not None
    for call in doc["calls"]:
        assert call["ok"] and call["frames"] > 0 and call["rtt_ms"]
        assert call["markers_heard"] >= len(call["rtt_ms"])
        assert call["candidates"] == ["host", "host"]


async def test_turns_are_answered_once_after_the_think_time() -> None:
    async with running_server(TurnsBackend()) as (url, _):
        opts = LoadOptions(
            url, calls=2, duration=6.5, warmup=0.5, ramp=20.0, workload="turns", think_ms=500.0
        )
        doc = await run(opts)
    s = doc["summary"]
    assert (s["calls_ok"], s["calls_failed"]) == (2, 0), s["failures"]
    assert s["turns"] >= 2 and s["turns_unanswered"] == 0
    # An answer cannot reach the caller before the brain has waited out the end of the turn
    # (0.3 s of audio) and thought (0.2 s).
    assert s["turn_ms"]["n"] == s["turns"]
    assert min(ms for c in doc["calls"] for ms in c["turn_ms"]) >= 500.0
    assert s["gateway_ms"]["p50"] == round(s["turn_ms"]["p50"] - 500.0, 1)
    assert s["rtt_ms"]["p50"] is None  # no markers on this workload


async def test_relay_goes_through_the_servers_turn(tmp_path: Path) -> None:
    with running_coturn(tmp_path, SECRET) as turn:
        async with running_server(
            EchoBrainBackend(),
            turn_urls=(f"turn:127.0.0.1:{turn.port}?transport=udp",),
            turn_secret=SECRET,
        ) as (url, _):
            doc = await run(LoadOptions(url, calls=1, duration=2.0, warmup=0.5, relay=True))
    s = doc["summary"]
    assert (s["calls_ok"], s["calls_failed"]) == (1, 0), s["failures"]
    assert doc["calls"][0]["candidates"][0] == "relay"
    assert s["rtt_ms"]["n"] >= 1


async def test_relay_without_a_turn_server_is_refused_before_calling() -> None:
    async with running_server(EchoBrainBackend()) as (url, _):
        with pytest.raises(RuntimeError, match="no TURN server"):
            await run(LoadOptions(url, calls=1, duration=1.0, relay=True))


# -- the command: exit status and messages -----------------------------------------------------


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("VOICEGATE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicegate", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_url_fails_with_the_reason() -> None:
    code, out, err = await _cli(f"http://127.0.0.1:{_closed_port()}", "--duration", "1")
    assert code == 1
    assert "cannot reach" in out and "1 of 1 calls failed" in err


async def test_not_a_url_is_a_usage_error() -> None:
    code, _, err = await _cli("127.0.0.1:8080")
    assert code == 2 and "not an http:// or https:// URL" in err


async def test_missing_token_fails_with_401() -> None:
    async with running_server(EchoBrainBackend(), auth_secret=SECRET) as (url, _):
        code, out, err = await _cli(url, "--duration", "1")
    assert code == 1
    assert "failed x1: 401" in out and "1 of 1 calls failed" in err


async def test_refused_call_fails_with_503(tmp_path: Path) -> None:
    report = tmp_path / "load.json"
    async with running_server(EchoBrainBackend(), max_sessions=1) as (url, _):
        code, out, err = await _cli(url, "--calls", "2", "--duration", "2", "--json", str(report))
    assert code == 1, out + err
    doc: dict[str, Any] = json.loads(report.read_text())
    s = doc["summary"]
    assert (s["calls_ok"], s["calls_failed"]) == (1, 1)
    (reason,) = s["failures"]
    assert reason.startswith("503 ")
    assert [c["status"] for c in doc["calls"] if not c["ok"]] == [503]
    for key in ("rtt_ms", "connect_ms"):
        assert {"p50"} <= set(s[key])
    assert {"p95", "p99"} <= set(s["rtt_ms"]) and "max" in s["connect_ms"]
    assert s["fps_min"] > 0
    assert "failed x1: 503" in out and "1 of 2 calls failed" in err


# -- the turns brain on its own -----------------------------------------------------------------


async def test_turns_brain_answers_each_turn_once_with_a_finite_reply() -> None:
    brain = TurnsBrain(end_silence_s=0.3, think_s=0.0)
    t = np.arange(320) / 16000
    voiced = (3000 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes()
    quiet = bytes(640)
    for event in (
        sonic.SessionStart(),
        sonic.PromptStart("p"),
        sonic.TextContentStart("p", "s", "SYSTEM"),
        sonic.TextInput("p", "s", "You are a test."),
        sonic.ContentEnd("p", "s"),
        sonic.AudioContentStart("p", "a"),
    ):
        await brain.send(event)
    turn = [voiced] * 40 + [quiet] * 100  # 0.8 s of speech, then 2 s of quiet
    for chunk in turn * 2:
        await brain.send(sonic.AudioInput("p", "a", chunk))
        await asyncio.sleep(0)
    for _ in range(50):
        if brain.turns == 2:
            break
        await asyncio.sleep(0.02)
    await brain.close()
    audio = 0
    texts: list[tuple[str, str]] = []
    while not brain._out.empty():
        item = brain._out.get_nowait()
        if isinstance(item, sonic.AudioOutput):
            audio += len(item.content) // 2
        elif isinstance(item, sonic.TextOutput):
            texts.append((item.role, item.content))
    assert brain.turns == 2
    assert [role for role, _ in texts] == ["USER", "ASSISTANT", "ASSISTANT"] * 2
    # Each reply is the turn's speech once (0.8 s at the 24 kHz output rate), nothing more.
    assert audio == 2 * int(0.8 * 24000)
