"""Benchmark caller: N concurrent headless aiortc calls that play marker-tone speech and time
each marker's round trip. Runs in its own process (pinned to its own core by ``run.py``).

    python -m benchmarks.loadclient --url URL --calls N --seconds S --out FILE [--loss P ...]

What it sends is pre-encoded once, browser-like Opus (SILK/hybrid ``voip``, 32 kbit/s, in-band
FEC), so the client spends no CPU encoding. What it receives goes through voicegate's patched
aiortc receive path (``voicegate.rtcpatch``): decoded the moment a packet arrives, with no receive
buffer, otherwise the client would measure its own jitter buffer (aiortc's adds ~80 ms).

Round trip of a marker = arrival of the first received frame containing it minus the moment
the frame with its onset was handed to aiortc for sending. Both clocks are this process's event
loop (``time.monotonic``), which the stand-in process shares for one-way splits.

``--loss``/``--jitter-ms`` impair this client's RTP in both directions (a lossy link at the
client's socket, seeded): this machine's kernel has no ``netem``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks.markers import Detector, speech, with_markers
from voicegate.media import ice, opus
from voicegate.media import patch as rtcpatch

RATE = 48000
FRAME = 960


def encode_signal(seconds: float) -> tuple[list[bytes], set[int]]:
    """The whole call's audio as Opus packets, and the indices of frames where a marker starts."""
    base = speech(RATE, seconds)
    sig, starts = with_markers(base, RATE)
    enc = opus.Encoder(RATE, bitrate=32000, complexity=5, fec=True, loss_percent=10)
    packets = [enc.encode(sig[i : i + FRAME].tobytes()) for i in range(0, len(sig) - FRAME, FRAME)]
    return packets, {s // FRAME for s in starts}


class PacketTrack(MediaStreamTrack):
    """Paced 20 ms pre-encoded Opus packets; notes when each marker frame is handed over."""

    kind = "audio"

    def __init__(self, packets: list[bytes], marker_frames: set[int], offset: int) -> None:
        super().__init__()
        self._packets = packets
        self._markers = marker_frames
        self._offset = offset  # calls start at different places in the signal
        self._start: float | None = None
        self._n = 0
        self.sent: list[float] = []

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            delay = self._start + self._n * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        idx = (self._n + self._offset) % len(self._packets)
        packet = av.Packet(self._packets[idx])
        packet.pts = self._n * FRAME
        packet.time_base = Fraction(1, RATE)
        if idx in self._markers:
            self.sent.append(loop.time())
        self._n += 1
        return packet


class Call:
    def __init__(self, url: str, packets: list[bytes], markers: set[int], offset: int) -> None:
        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = PacketTrack(packets, markers, offset)
        self.detector = Detector(16000)
        self.frames: list[float] = []
        self.pc_id = ""
        self.error = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = loop.time()
                self.frames.append(now)
                pcm = np.frombuffer(memoryview(frame.planes[0]), np.int16)[: frame.samples]
                self.detector.push(pcm, now)

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.pc.addTrack(self.mic)
        self.pc.createDataChannel("rtvi")  # what a browser client opens; cheap when idle
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with asyncio.timeout(30):
            async with http.post(f"{self.url}/api/offer", json=body) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"offer refused: {resp.status} {answer}")
        self.pc_id = str(answer.get("pc_id", ""))
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )

    async def close(self, http: aiohttp.ClientSession) -> None:
        if self.pc_id:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    async with http.delete(f"{self.url}/api/sessions/{self.pc_id}") as resp:
                        await resp.read()
        self.mic.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.pc.close()
        for task in self._tasks:
            task.cancel()

    def round_trips(self) -> list[tuple[float, float]]:
        """(send time, round trip ms) per marker: each detection pairs with the latest marker
        sent before it (markers are 1 s apart; a round trip above ~0.9 s would be ambiguous)."""
        out = []
        sent = self.mic.sent
        j = 0
        for t in self.detector.on_marker:
            while j + 1 < len(sent) and sent[j + 1] < t:
                j += 1
            if j < len(sent) and sent[j] < t and t - sent[j] < 0.95:
                out.append((sent[j], (t - sent[j]) * 1000))
        return out


def impair(loss: float, jitter_ms: float, delay_ms: float, seed: int) -> None:
    """Drop and delay this process's RTP (not RTCP) both ways at the DTLS transport."""
    if loss <= 0 and jitter_ms <= 0 and delay_ms <= 0:
        return
    rng = random.Random(seed)
    pending: set[asyncio.Future[Any]] = set()  # delayed packets in flight (kept referenced)

    def keep(future: asyncio.Future[Any]) -> None:
        pending.add(future)
        future.add_done_callback(pending.discard)

    send, handle = RTCDtlsTransport._send_rtp, RTCDtlsTransport._handle_rtp_data

    def is_rtcp(data: bytes) -> bool:
        return len(data) > 1 and 192 <= data[1] <= 223

    def later(coro: Any) -> None:
        wait = (delay_ms + rng.uniform(0, jitter_ms)) / 1000
        if wait <= 0:
            keep(asyncio.ensure_future(coro))
            return

        async def run() -> None:
            await asyncio.sleep(wait)
            with contextlib.suppress(Exception):
                await coro

        keep(asyncio.ensure_future(run()))

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        if is_rtcp(data):
            await send(self, data)
        elif rng.random() >= loss:
            later(send(self, data))

    async def handle_rtp(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        if is_rtcp(data):
            await handle(self, data, arrival_time_ms)
        elif rng.random() >= loss:
            later(handle(self, data, arrival_time_ms))

    RTCDtlsTransport._send_rtp = send_rtp  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ice.configure_host_addresses(["127.0.0.1"])
    rtcpatch.apply(rtcpatch.MediaSettings(decode_rate=16000))
    impair(args.loss, args.jitter_ms, args.delay_ms, args.seed)
    total = args.seconds + args.calls * args.ramp + 10
    packets, markers = encode_signal(min(total, 60.0))
    loop = asyncio.get_running_loop()
    calls: list[Call] = []
    refused = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        for i in range(args.calls):
            call = Call(args.url, packets, markers, offset=(i * 13) % 50)
            try:
                await call.connect(http)
            except Exception as exc:
                call.error = f"{type(exc).__name__}: {exc}"
                refused += 1
                await call.close(http)
                continue
            calls.append(call)
            await asyncio.sleep(args.ramp)
        print(f"CONNECTED {len(calls)}", flush=True)
        await asyncio.sleep(args.warmup)
        t0 = loop.time()
        print(f"STEADY_START {time.monotonic()}", flush=True)
        await asyncio.sleep(args.seconds)
        t1 = loop.time()
        print(f"STEADY_END {time.monotonic()}", flush=True)
        results = []
        for call in calls:
            rtts = [(t, ms) for t, ms in call.round_trips() if t0 <= t <= t1]
            frames = sum(1 for t in call.frames if t0 <= t <= t1)
            stats = None
            for transceiver in call.pc.getTransceivers():
                path = rtcpatch.receive_path(transceiver.receiver)
                if path is not None:
                    stats = {
                        k: getattr(path.stats, k)
                        for k in ("packets", "concealed", "recovered", "late")
                    }
            results.append(
                {
                    "rtt": rtts,
                    "fps_back": frames / (t1 - t0),
                    "markers_sent": sum(1 for t in call.mic.sent if t0 <= t <= t1),
                    "sent_times": [t for t in call.mic.sent if t0 <= t <= t1],
                    "receive": stats,
                }
            )
        await asyncio.gather(*(c.close(http) for c in calls), return_exceptions=True)
    return {"calls": results, "refused": refused, "window": [t0, t1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--ramp", type=float, default=0.05)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result))
    sys.exit(0)


if __name__ == "__main__":
    main()
