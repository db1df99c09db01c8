"""The baseline: a minimal echo gateway on stock aiortc 1.16 (no voicegate code, no patches).

Receives the caller's audio, resamples it to 16 kHz mono as any model gateway must, and plays it
straight back on a paced 20 ms track (at 24 kHz, a speech model's output rate). It has no model
hop at all, so its round trip is a floor for any stock-aiortc gateway.

    python -m benchmarks.stock_gateway --port 8090 [--patched]

With ``--patched`` the very same gateway runs with ``voicegate.rtcpatch`` applied: the A/B of
voicegate's media path alone, without voicegate's conversation layer or the model hop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import uuid

import aioice.ice
import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

# aioice never offers 127.0.0.1 (aiortc/aioice#2); the benchmark runs on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class EchoTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: collections.deque[bytes] = collections.deque(maxlen=50)
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = self.queue.popleft() if self.queue else bytes(960)
        frame = av.AudioFrame(format="s16", layout="mono", samples=480)
        frame.planes[0].update(pcm)
        frame.sample_rate, frame.pts = 24000, self._n * 480
        frame.time_base = fractions.Fraction(1, 24000)
        self._n += 1
        return frame


async def pump(track: MediaStreamTrack, echo: EchoTrack) -> None:
    to16 = av.AudioResampler(format="s16", layout="mono", rate=16000)
    to24 = av.AudioResampler(format="s16", layout="mono", rate=24000, frame_size=480)
    try:
        while True:
            frame = await track.recv()
            for f16 in to16.resample(frame):  # what a gateway hands its model
                for f24 in to24.resample(f16):  # what the model would hand back
                    echo.queue.append(bytes(f24.planes[0])[:960])
    except MediaStreamError:
        pass


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc_id = f"pc-{uuid.uuid4().hex}"
    request.app["pcs"][pc_id] = pc
    echo = EchoTrack()
    pc.on("track", lambda track: request.app["tasks"].add(asyncio.ensure_future(pump(track, echo))))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    pc.addTrack(echo)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer", "pc_id": pc_id})


async def hangup(request: web.Request) -> web.Response:
    pc = request.app["pcs"].pop(request.match_info["pc_id"], None)
    if pc is not None:
        await pc.close()
    return web.Response(status=204)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--patched", action="store_true", help="the same gateway with voicegate's rtcpatch applied"
    )
    args = parser.parse_args()
    if args.patched:  # A/B of the media path alone: identical code, voicegate's aiortc patches
        from voicegate.media import patch as rtcpatch

        rtcpatch.apply()
    app = web.Application()
    app["pcs"], app["tasks"] = {}, set()
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{pc_id}", hangup)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("READY", flush=True))


if __name__ == "__main__":
    main()
