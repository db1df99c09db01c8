"""A headless voicegate caller: a real aiortc peer that speaks a WAV and records the answer.

Used by the integration tests, ``voicegate loadtest`` (testing/loadtest.py) and the benchmarks.
It behaves like the web page: it opens the ``rtvi`` data channel before the offer, sends
``client-ready``, plays its audio as a paced 48 kHz track (or any track it is given, e.g. the
load test's pre-encoded Opus), and keeps every data-channel message and every received audio
frame (with its arrival time) for inspection, or hands each frame to a callback the moment it is
decoded. With voicegate's media patches applied in the process (media/patch.py) it decodes each
packet on arrival and adds no receive buffer of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from voicegate.audio.levels import rms
from voicegate.audio.resample import FrameResampler, resample_pcm16

__all__ = [
    "CallClient",
    "FRAME",
    "FrameSink",
    "OfferRefused",
    "PcmTrack",
    "RATE",
    "ReceivedAudio",
    "load_wav",
    "pace",
]

RATE: Final = 48000
FRAME: Final = 960  # 20 ms at 48 kHz


def load_wav(path: str | Path, rate: int = RATE) -> np.ndarray:
    """A WAV file as mono int16 at ``rate`` (resampled with libswresample)."""
    with wave.open(str(path), "rb") as w:
        channels, width, src_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit WAV files are supported")
    data = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels).mean(axis=1).astype(np.int16)
    if src_rate == rate:
        return data
    return np.frombuffer(resample_pcm16(data.tobytes(), src_rate, rate), dtype=np.int16).copy()


async def pace(start: float | None, n: int) -> float:
    """Wait until frame ``n`` of a track that began at loop time ``start`` is due (20 ms each),
    as a microphone delivers: no burst, no backlog. Returns the start (now, for frame 0)."""
    loop = asyncio.get_running_loop()
    if start is None:
        return loop.time()
    delay = start + n * 0.02 - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return start


class PcmTrack(MediaStreamTrack):
    """Plays queued 48 kHz mono PCM in paced 20 ms frames, silence when the queue is empty."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[np.ndarray] = []
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._n = 0
        self.sent_at: dict[int, float] = {}  # frame index -> loop time it was handed over
        self.record_send_times = False

    def play(self, pcm: np.ndarray) -> None:
        self._queue.append(pcm.astype(np.int16))

    @property
    def idle(self) -> bool:
        return not self._queue and self._pending.size == 0

    def _next_pcm(self) -> np.ndarray:
        while self._pending.size < FRAME and self._queue:
            self._pending = np.concatenate([self._pending, self._queue.pop(0)])
        if self._pending.size == 0:
            return np.zeros(FRAME, dtype=np.int16)
        out, self._pending = self._pending[:FRAME], self._pending[FRAME:]
        if out.size < FRAME:
            out = np.concatenate([out, np.zeros(FRAME - out.size, dtype=np.int16)])
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        self._start = await pace(self._start, self._n)
        pcm = self._next_pcm()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * FRAME
        frame.time_base = Fraction(1, RATE)
        if self.record_send_times:
            self.sent_at[self._n] = loop.time()
        self._n += 1
        return frame


@dataclass
class ReceivedAudio:
    frames: list[np.ndarray] = field(default_factory=list)  # mono int16 at 48 kHz
    arrival: list[float] = field(default_factory=list)  # loop time of each frame

    def pcm(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, dtype=np.int16)

    def rms_after(self, t0: float) -> float:
        parts = [f for f, t in zip(self.frames, self.arrival, strict=True) if t >= t0]
        if not parts:
            return 0.0
        return rms(np.concatenate(parts))

    def speech_seconds(self, threshold: float = 500.0) -> float:
        """Seconds of received frames whose RMS is above ``threshold``."""
        return sum(1 for f in self.frames if rms(f) > threshold) * 0.02


class OfferRefused(RuntimeError):
    """The server answered the offer with an error status (``reason``: its JSON ``error``)."""

    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(f"offer refused: {status} {body if body is not None else reason}")
        self.status = status
        self.reason = reason
        self.body = body  # the JSON answer (its "reason" names the refusal), None if not JSON


FrameSink = Callable[[np.ndarray, int, float], None]
"""Called with (mono int16 samples, their rate, loop time of arrival) for each received frame."""


def _mono(frame: av.AudioFrame) -> np.ndarray:
    samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16)
    channels = len(frame.layout.channels)
    samples = samples[: frame.samples * channels]
    if channels > 1:  # packed s16: interleaved channels
        return samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples


class CallClient:
    def __init__(
        self,
        base_url: str,
        ice_servers: list[RTCIceServer] | None = None,
        relay_only: bool = False,
        token: str | None = None,
        source: MediaStreamTrack | None = None,
        on_frame: FrameSink | None = None,
        keep_audio: bool = True,
    ) -> None:
        """``source``: the track to send instead of ``mic`` (a PcmTrack fed with ``play``);
        ``on_frame``: called for every received frame as it is decoded; ``keep_audio=False``:
        keep no received audio in ``audio`` (a long load test)."""
        self.base_url = base_url.rstrip("/")
        # The access token for the offer; the answer's per-call session_token then
        # replaces it for everything that touches this call (hang-up).
        self.token = token
        self.session_token: str | None = None
        config = RTCConfiguration(iceServers=ice_servers or [])
        if relay_only:
            config.iceTransportPolicy = RTCIceTransportPolicy.RELAY
        self.pc = RTCPeerConnection(config)
        self.mic = PcmTrack()
        self.source: MediaStreamTrack = source if source is not None else self.mic
        self.on_frame = on_frame
        self.keep_audio = keep_audio
        self.connected = asyncio.Event()
        self.connection_error: str | None = None
        """Why the connection failed or closed after connecting (None while it is fine)."""
        self.audio = ReceivedAudio()
        self.messages: list[dict[str, Any]] = []
        self.pc_id = ""
        self.offer_fields: dict[str, Any] = {}  # extra offer body fields, e.g. {"record": True}
        self.rtvi_version = "1.0.0"  # what client-ready says (Pipecat's client-js says 2.1.0)
        self._message_event = asyncio.Event()
        self._frame_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel = self.pc.createDataChannel("rtvi", ordered=True)
        self._channel.on("open", self._on_open)
        self._channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed") and self.connection_error is None:
            self.connection_error = f"connection {state}"
            self.connected.set()  # wake waiters; connection_error says why

    async def wait_connected(self, timeout: float) -> None:
        """Until ICE and DTLS are up; RuntimeError when the connection fails or closes."""
        async with asyncio.timeout(timeout):
            await self.connected.wait()
        if self.connection_error is not None:
            raise RuntimeError(self.connection_error)

    def _on_open(self) -> None:
        self._channel.send(
            json.dumps(
                {
                    "label": "rtvi-ai",
                    "type": "client-ready",
                    "id": uuid.uuid4().hex[:8],
                    "data": {
                        "version": self.rtvi_version,
                        "about": {"library": "voicegate-client"},
                    },
                }
            )
        )

    def _on_message(self, raw: str | bytes) -> None:
        with contextlib.suppress(ValueError, TypeError):
            msg = json.loads(raw)
            if isinstance(msg, dict):
                msg["_t"] = time.monotonic()
                self.messages.append(msg)
                self._message_event.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = FrameResampler(RATE)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                now = loop.time()
                if self.on_frame is not None:
                    self.on_frame(_mono(frame), frame.sample_rate, now)
                if not self.keep_audio:
                    self._frame_event.set()
                    continue
                out = resampler.process(frame)
                if out.size:
                    self.audio.frames.append(out.copy())
                    self.audio.arrival.append(now)
                self._frame_event.set()

    async def connect(
        self, session: aiohttp.ClientSession | None = None, restart_of: str | None = None
    ) -> dict[str, Any]:
        """``restart_of``: the pc_id of a call whose connection dropped; the new connection
        takes over its conversation (like the page's automatic reconnect)."""
        self.pc.addTrack(self.source)
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        body: dict[str, Any] = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        body.update(self.offer_fields)
        if restart_of is not None:
            body.update(pc_id=restart_of, restart_pc=True)
        own = session is None
        http = session or aiohttp.ClientSession()
        try:
            async with http.post(
                f"{self.base_url}/api/offer", json=body, headers=self._auth(self.token)
            ) as resp:
                text = await resp.text()
                try:
                    answer = json.loads(text)
                except ValueError:
                    answer = None
                if resp.status != 200 or not isinstance(answer, dict):
                    reason = answer.get("error") if isinstance(answer, dict) else None
                    raise OfferRefused(
                        resp.status, str(reason or text[:200].strip() or resp.reason), answer
                    )
        finally:
            if own:
                await http.close()
        self.pc_id = answer["pc_id"]
        self.session_token = answer.get("session_token")
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )
        return dict(answer)

    @staticmethod
    def _auth(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def selected_candidate_types(self) -> tuple[str, str] | None:
        """(local, remote) candidate types of the nominated ICE pair, e.g. ("relay", "host")."""
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            # aiortc exposes no selected-pair API; aioice keeps it on the connection.
            nominated = getattr(dtls.transport._connection, "_nominated", {})
            pair = nominated.get(1)
            if pair is not None:
                return pair.local_candidate.type, pair.remote_candidate.type
        return None

    @staticmethod
    async def fetch_ice_servers(
        http: aiohttp.ClientSession, base_url: str, token: str | None = None
    ) -> list[dict[str, Any]]:
        """The server's ICE servers for browsers (GET /api/ice-servers), as JSON entries."""
        async with http.get(
            f"{base_url.rstrip('/')}/api/ice-servers", headers=CallClient._auth(token)
        ) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(body, dict):
                raise RuntimeError(f"GET /api/ice-servers answered {resp.status} {body}")
            servers = body.get("iceServers", [])
            return [s for s in servers if isinstance(s, dict)]

    @staticmethod
    def ice_servers_from_json(entries: list[dict[str, Any]]) -> list[RTCIceServer]:
        return [
            RTCIceServer(urls=e["urls"], username=e.get("username"), credential=e.get("credential"))
            for e in entries
        ]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == type_]

    async def wait_for(self, type_: str, timeout: float, predicate: Any = None) -> dict[str, Any]:
        """The first message of ``type_`` (matching ``predicate``), waiting up to ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                for msg in self.messages:
                    if msg.get("type") == type_ and (predicate is None or predicate(msg)):
                        return msg
                self._message_event.clear()
                await self._message_event.wait()

    async def wait_frames(self, count: int, timeout: float) -> None:
        """Wait until ``count`` more audio frames than now have been received."""
        target = len(self.audio.frames) + count
        async with asyncio.timeout(timeout):
            while len(self.audio.frames) < target:
                self._frame_event.clear()
                await self._frame_event.wait()

    async def hangup(self, session: aiohttp.ClientSession | None = None) -> int:
        own = session is None
        http = session or aiohttp.ClientSession()
        try:
            async with http.delete(
                f"{self.base_url}/api/sessions/{self.pc_id}",
                headers=self._auth(self.session_token),
            ) as resp:
                return resp.status
        finally:
            if own:
                await http.close()

    async def close(self) -> None:
        self.mic.stop()
        self.source.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
