"""Helpers for real-browser tests: a voicegate server subprocess, a spoken WAV, headless chromium.

Kept apart from the tests so the TURN/relay tests can start the same browser the same way.
Nothing here downloads anything: chromium is Debian's (/usr/bin/chromium), the speech comes from
espeak-ng, and Playwright is only used as a driver for that executable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.support.components import missing, require_tool

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("VOICEGATE_CHROMIUM", "/usr/bin/chromium"))
SERVER_START_TIMEOUT_S = 120.0  # the local backend loads Whisper and TTS weights before listening
HTTP_TIMEOUT_S = 10.0

# Chromium flags for a headless root run on a machine with no outside network: no sandbox,
# no GPU, and none of Chromium's background connections (they would all be refused).
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",  # tests run as root in containers, where the setuid sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    # Without it Chromium gathers no ICE candidate at all where only the loopback interface exists.
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)


def require_browser() -> None:
    if not CHROMIUM.exists():
        missing(f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing("the playwright Python package is not installed (pip install voicegate[dev])")


def make_speech_wav(
    directory: Path, text: str, lead_s: float = 1.5, tail_s: float = 2.0, words_per_min: int = 130
) -> Path:
    """A spoken WAV (espeak-ng's own 16-bit mono; Chromium resamples it) with silence around it.

    "Hello. What time is it?" pauses 490 ms after "Hello." at 130 words a minute, just under the
    VAD's 500 ms hangover (at 120 words a minute it splits the turn); "Hello, what time is it?"
    pauses 240 ms. Both were heard right at all 64 Opus-coded onsets with the server's beam
    search (``asr.BEAM_SIZE``). At espeak's default 150, "what time" became "what type" about
    one time in 10 with greedy decoding.

    The lead-in covers the time between getUserMedia (when Chromium starts reading the file) and
    the moment ICE and DTLS are up; the tail lets the server's VAD see the end of the turn.
    """
    espeak = require_tool("espeak-ng")
    raw = directory / "speech-raw.wav"
    out = directory / "speech.wav"
    subprocess.run(
        [espeak, "-v", "en-us", "-s", str(words_per_min), "-w", str(raw), text],
        check=True,
        timeout=60,
    )
    with wave.open(str(raw), "rb") as w:
        rate = w.getframerate()
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2), "espeak-ng wrote no 16-bit mono"
        speech = w.readframes(w.getnframes())
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * int(lead_s * rate)) + speech + bytes(2 * int(tail_s * rate)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m voicegate serve`` as a subprocess, with its log captured to a file."""

    def __init__(
        self,
        backend: str,
        log_dir: Path,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.extra_env = dict(env or {})  # e.g. VOICEGATE_TURN_SECRET, kept off the command line
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"voicegate-{backend}-{self.port}.log"
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(self.extra_env)
        src = str(REPO / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._log = self.log_path.open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "voicegate", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--backend", self.backend, *self.extra_args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip

    async def start(self) -> None:
        self.proc = self._spawn()
        try:
            async with asyncio.timeout(SERVER_START_TIMEOUT_S):
                while True:
                    if self.proc.poll() is not None:
                        raise AssertionError(
                            f"voicegate exited with {self.proc.returncode}:\n{self.log_tail()}"
                        )
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        await self.healthz()
                        return
                    # Start-up wait only (the server is a separate process with no readiness
                    # pipe); nothing on an audio path polls.
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(
                f"voicegate did not answer /healthz within {SERVER_START_TIMEOUT_S} s:\n"
                f"{self.log_tail()}"
            ) from None

    async def healthz(self) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self.base}/healthz") as res,
        ):
            assert res.status == 200, f"/healthz answered {res.status}"
            body = await res.json()
            assert isinstance(body, dict)
            return body

    async def sessions(self) -> int:
        body = await self.healthz()
        assert "sessions" in body, f"/healthz has no sessions count: {body}"
        return int(body["sessions"])

    async def wait_sessions(self, expected: int, timeout_s: float = 15.0) -> None:
        last: int | None = None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    last = await self.sessions()
                    if last == expected:
                        return
                    await asyncio.sleep(0.1)  # another process's bookkeeping, not an audio path
        except TimeoutError:
            raise AssertionError(
                f"/healthz sessions stayed {last}, expected {expected}:\n{self.log_tail()}"
            ) from None

    async def aclose(self) -> None:
        """``stop`` off the event loop: the server drains on SIGTERM, which takes a while."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.asynccontextmanager
async def running_server(
    backend: str,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Server]:
    server = Server(backend, log_dir, extra_args, env)
    try:
        await server.start()
        yield server
    finally:
        await server.aclose()


@contextlib.asynccontextmanager
async def chromium(
    mic_wav: Path | None,
    extra_args: Sequence[str] = (),
    loop_mic: bool = False,
    allow_mic: bool = True,
    bypass_csp: bool = True,
) -> AsyncIterator[Any]:
    """A fresh headless Debian chromium profile (Playwright BrowserContext) with a fake mic.

    ``--mute-audio`` (a Playwright default) is dropped so the page's audio graph really runs.
    ``%noloop`` stops Chromium replaying the WAV, so one utterance gives one turn. With
    ``allow_mic=False`` the microphone permission prompt is answered "deny", as a user would.
    ``bypass_csp``: Playwright's ``wait_for_function`` evaluates its predicate with ``eval``,
    which the page's Content-Security-Policy forbids; tests of the policy itself pass False.
    """
    require_browser()
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    args.append("--use-fake-ui-for-media-stream" if allow_mic else "--deny-permission-prompts")
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}{'' if loop_mic else '%noloop'}")
    args.extend(extra_args)
    with tempfile.TemporaryDirectory(prefix="vg-chromium-") as profile:
        async with async_playwright() as p:
            async with asyncio.timeout(60):
                ctx = await p.chromium.launch_persistent_context(
                    profile,
                    executable_path=str(CHROMIUM),
                    headless=True,
                    ignore_default_args=["--mute-audio"],
                    args=args,
                    timeout=60_000,
                    bypass_csp=bypass_csp,
                )
            try:
                yield ctx
            finally:
                async with asyncio.timeout(30):
                    await ctx.close()


# -- The page (web/) as the browser tests read it ------------------------------------------

# Peak RMS (full scale = 1.0) the bot meter must exceed. Silence and comfort noise stay far below;
# spoken audio through Opus reaches roughly 0.05-0.3.
BOT_RMS_FLOOR = 0.02
CONNECT_TIMEOUT_MS = 30_000
TURN_TIMEOUT_MS = 90_000  # local backend on a shared 2-core box: ASR + TTS of one short turn

# Transcript lines the page renders, one per turn and side.
USER_LINE = "#transcript .line.user .said"
BOT_LINE = "#transcript .line.bot .said"


async def wait_js(page: Any, expression: str, timeout_ms: int, what: str, server: Server) -> None:
    """wait_for_function under a Playwright and an asyncio deadline, failing with a snapshot."""
    try:
        async with asyncio.timeout(timeout_ms / 1000 + 5):
            await page.wait_for_function(expression, timeout=timeout_ms, polling=100)
    except Exception as exc:  # Playwright's TimeoutError or ours; both mean the same here
        async with asyncio.timeout(10):
            snapshot = await page.evaluate(
                "() => ({state: vg.state, connected: vg.connected, errors: vg.errors,"
                " transcript: vg.transcript, stats: vg.stats, botPeak: vg.botPeak,"
                " events: vg.events.map(e => e.type)})"
            )
        raise AssertionError(
            f"timed out waiting for {what}: {type(exc).__name__}\npage: {snapshot}\n"
            f"server log:\n{server.log_tail()}"
        ) from None
