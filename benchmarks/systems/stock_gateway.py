"""The baseline: a minimal gateway on stock aiortc 1.16 (no voicegate media code, no patches).

Receives the caller's audio, resamples it to 16 kHz mono as any model gateway must, and plays
what comes back on a paced 20 ms track at 24 kHz, a speech model's output rate. What comes back
depends on ``--brain``:

- ``echo`` (the default; the markers workload): every frame straight back, resampled to 24 kHz.
- ``turns`` (the turns workload): the stand-in's turns rules (``TurnTaking`` from
  voicegate.standin.scripted_turns, the very code the stand-in's turns brain runs) in this
  process, on the 16 kHz audio: each turn answered once, 300 ms of end-of-turn silence (audio
  time) plus 200 ms of thinking after it ends, with the turn played back once at 24 kHz through
  the same paced track.

Either way there is no model hop (no SDK, no signing, no HTTP/2, no conversation layer): its
round trip, and its time from end of speech to answer minus the brain's, are the media path of
stock aiortc alone, a floor for any stock-aiortc gateway.

    python -m benchmarks.systems.stock_gateway --port 8090 [--patched] [--brain turns]

With ``--patched`` the very same gateway runs with ``voicegate.media.patch`` applied: the A/B of
voicegate's media path alone, without voicegate's conversation layer or the model hop.

voicegate's modules are imported only where ``--patched`` or ``--brain turns`` asks for them, so
the stock gateway runs with none of voicegate's code loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import uuid
from typing import TYPE_CHECKING

import aioice.ice
import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

if TYPE_CHECKING:
    from voicegate.standin.scripted_turns import TurnTaking

# aioice never offers 127.0.0.1 (aiortc/aioice#2); the benchmark runs on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

FRAME_BYTES = 960
"""One 20 ms frame of 24 kHz 16-bit mono."""
ECHO_QUEUE = 50
"""Echo: at most 1 s of backlog, the oldest dropped beyond it."""


class EchoTrack(MediaStreamTrack):
    """20 ms frames on a fixed clock: the next queued frame, or silence."""

    kind = "audio"

    def __init__(self, max_frames: int = ECHO_QUEUE) -> None:
        super().__init__()
        self.queue: collections.deque[bytes] = collections.deque(maxlen=max_frames)
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = self.queue.popleft() if self.queue else bytes(FRAME_BYTES)
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
            assert isinstance(frame, av.AudioFrame)  # an audio track's frames
            for f16 in to16.resample(frame):  # what a gateway hands its model
                for f24 in to24.resample(f16):  # what the model would hand back
                    echo.queue.append(bytes(f24.planes[0])[:FRAME_BYTES])
    except MediaStreamError:
        pass


async def listen(track: MediaStreamTrack, rules: TurnTaking) -> None:
    """The caller's audio, at 16 kHz, to the turns rules (which hand ended turns to ``answer``)."""
    to16 = av.AudioResampler(format="s16", layout="mono", rate=16000)
    try:
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.AudioFrame)  # an audio track's frames
            for f16 in to16.resample(frame):  # what a gateway hands its model
                rules.hear(bytes(f16.planes[0])[: 2 * f16.samples])
    except MediaStreamError:
        pass


async def answer(rules: TurnTaking, out: EchoTrack) -> None:
    """Each turn, once thought about, played back on the paced track, whole: a model's audio
    arrives faster than real time and the track's clock paces it."""
    while True:
        reply = (await rules.next_turn()).reply(24000)
        for i in range(0, len(reply), FRAME_BYTES):
            out.queue.append(reply[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc_id = f"pc-{uuid.uuid4().hex}"
    request.app["pcs"][pc_id] = pc
    tasks: set[asyncio.Task[None]] = request.app["tasks"]
    if request.app["brain"] == "turns":
        from voicegate.standin.scripted_turns import MAX_PENDING_TURNS, MAX_TURN_S, TurnTaking

        rules = TurnTaking(request.app["end_silence"], request.app["think"])
        # Room for every reply the rules can have pending (each at most MAX_TURN_S), so the
        # track never drops answer audio.
        out = EchoTrack(int(MAX_TURN_S / 0.02) * (MAX_PENDING_TURNS + 1))

        def on_track(track: MediaStreamTrack) -> None:
            answering = asyncio.ensure_future(answer(rules, out))
            listening = asyncio.ensure_future(listen(track, rules))
            listening.add_done_callback(lambda _: answering.cancel())
            tasks.update((answering, listening))
            for task in (answering, listening):
                task.add_done_callback(tasks.discard)

    else:
        out = EchoTrack()

        def on_track(track: MediaStreamTrack) -> None:
            tasks.add(asyncio.ensure_future(pump(track, out)))

    pc.on("track", on_track)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    pc.addTrack(out)
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
    parser.add_argument(
        "--brain",
        choices=("echo", "turns"),
        default="echo",
        help="echo every frame (markers) or answer turns with the stand-in's turns rules (turns)",
    )
    parser.add_argument("--end-silence", type=float, help="turns: end-of-turn silence, s")
    parser.add_argument("--think", type=float, help="turns: think time, s")
    args = parser.parse_args()
    if args.patched:  # A/B of the media path alone: identical code, voicegate's aiortc patches
        from voicegate.media import patch as rtcpatch

        rtcpatch.apply()
    app = web.Application()
    app["pcs"], app["tasks"], app["brain"] = {}, set(), args.brain
    if args.brain == "turns":  # the stand-in's defaults unless told otherwise: one owner
        from voicegate.standin.scripted_turns import END_SILENCE_S, THINK_S

        app["end_silence"] = END_SILENCE_S if args.end_silence is None else args.end_silence
        app["think"] = THINK_S if args.think is None else args.think
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{pc_id}", hangup)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("READY", flush=True))


if __name__ == "__main__":
    main()
