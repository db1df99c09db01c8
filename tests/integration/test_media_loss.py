"""Loss on a real aiortc pair on loopback (a packet dropper on the sending transport), and the
outbound track giving back latency that stalls added.

Stock aiortc turns one lost packet into a ~320 ms stall, 100 ms of skipped audio and +200 ms for
the rest of the call (aiortc#543). With voicegate's receive path a lost packet is one concealed
(or FEC-recovered) frame: every 20 ms of time arrives, and the delay after the loss is what it
was before it. A frame counts as FEC-recovered only when the packet after it carried LBRR data.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket

from voicegate.audio import chunks
from voicegate.media import encode, opus, receive
from voicegate.media import patch as rtcpatch
from voicegate.media.playout import LEAD_FLOOR_FRAMES, PlayoutTrack

rtcpatch.apply()


def _speech_like(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    sig = 8000 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return sig.astype(np.int16).tobytes()


def _voiced(seconds: float, rate: int = 24000) -> bytes:
    """Harmonics of a gliding pitch in ~4 syllables per second: what the encoder's VAD calls
    speech (a steady tone turns into "noise" for it within a second, and gets no FEC)."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return (5000 * wave * envelope).astype(np.int16).tobytes()


async def _call_with_dropper(
    drop: Callable[[int], bool],
    seconds: float,
    outbound: encode.OutboundOpus | None = None,
    pcm: bytes | None = None,
) -> tuple[list[tuple[int, float]], dict[int, float], receive.ReceiveStats, int, list[bytes]]:
    """Send ``seconds`` of audio (``pcm`` at 24 kHz, or a tone) from a PlayoutTrack; drop RTP
    packets where ``drop(n)``. Returns (pts, arrival) of every received frame, send time per RTP
    timestamp offset, the receive stats, the number of packets dropped and the Opus payload of
    each packet sent right after a dropped one (the one that may carry the lost frame's FEC)."""
    previous = rtcpatch.settings()
    if outbound is not None:
        rtcpatch.apply(rtcpatch.MediaSettings(previous.decode_rate, outbound))
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    tracks: list[Any] = []
    callee.on("track", tracks.append)
    track = PlayoutTrack(rate=24000)
    track.push(pcm if pcm is not None else _speech_like(seconds + 2))
    caller.addTrack(track)
    sent: dict[int, float] = {}
    dropped = 0
    after_loss: list[bytes] = []
    try:
        await caller.setLocalDescription(await caller.createOffer())
        await callee.setRemoteDescription(caller.localDescription)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(
            RTCSessionDescription(sdp=callee.localDescription.sdp, type="answer")
        )
        transport = caller.getSenders()[0].transport
        real_send = transport._send_rtp
        first_ts: list[int] = []
        count = 0
        last_dropped = False

        async def send_rtp(data: bytes) -> None:
            nonlocal count, dropped, last_dropped
            if 192 <= data[1] <= 223:  # RTCP passes
                await real_send(data)
                return
            ts = int.from_bytes(data[4:8], "big")
            if not first_ts:
                first_ts.append(ts)
            sent[(ts - first_ts[0]) & 0xFFFFFFFF] = loop.time()
            count += 1
            if drop(count):
                dropped += 1
                last_dropped = True
                return
            if last_dropped:
                after_loss.append(RtpPacket.parse(data).payload)
                last_dropped = False
            await real_send(data)

        transport._send_rtp = send_rtp
        frames: list[tuple[int, float]] = []
        assert len(tracks) == 1  # the track event fires during setRemoteDescription
        async with asyncio.timeout(seconds + 15):
            while len(frames) < seconds * 50:
                frame = await tracks[0].recv()
                frames.append((frame.pts, loop.time()))
        path = receive.receive_path(callee.getTransceivers()[0].receiver)
        assert path is not None
        return frames, sent, path.stats, dropped, after_loss
    finally:
        await caller.close()
        await callee.close()
        rtcpatch.apply(previous)


def _delays_ms(frames: list[tuple[int, float]], sent: dict[int, float]) -> list[float]:
    """Arrival minus send time per frame (pts at 16 kHz -> RTP offset at 48 kHz)."""
    return [(t - sent[pts * 3]) * 1000 for pts, t in frames if pts * 3 in sent]


async def test_one_lost_packet_is_one_concealed_frame_and_no_lasting_latency() -> None:
    frames, sent, stats, dropped, _ = await _call_with_dropper(lambda n: n == 100, 4.0)
    assert dropped == 1
    pts = [p for p, _ in frames]
    # Every 20 ms of time arrived: no gap where the packet was lost, nothing skipped.
    assert pts == list(range(pts[0], pts[0] + 320 * len(pts), 320))
    # The default outbound Opus is CELT-only, which has no in-band FEC: concealed, not recovered.
    assert stats.concealed == 1 and stats.recovered == 0
    delays = _delays_ms(frames, sent)
    before, after = delays[40:95], delays[105:]
    assert after, "frames after the loss arrived"
    # The stream is back at its floor right after the loss (stock aiortc: +200 ms for good).
    assert statistics.median(after) - statistics.median(before) < 10
    assert max(delays[99:103]) - statistics.median(before) < 40  # one frame's worth, no stall


async def test_five_percent_random_loss_costs_exactly_the_lost_frames() -> None:
    rng = random.Random(5)
    losses = {n for n in range(30, 280) if rng.random() < 0.05}
    frames, sent, stats, dropped, _ = await _call_with_dropper(lambda n: n in losses, 6.0)
    assert dropped == len(losses) >= 5
    pts = [p for p, _ in frames]
    assert pts == list(range(pts[0], pts[0] + 320 * len(pts), 320))
    assert stats.concealed + stats.recovered == dropped
    delays = _delays_ms(frames, sent)
    assert statistics.median(delays[-50:]) - statistics.median(delays[10:25]) < 10


async def test_fec_from_the_next_packet_restores_the_lost_frame() -> None:
    voip = encode.OutboundOpus(application="voip", fec=True, loss_percent=20, bitrate=32000)
    losses = set(range(40, 280, 15))
    frames, _, stats, dropped, after_loss = await _call_with_dropper(
        lambda n: n in losses, 6.0, voip, _voiced(8.0)
    )
    assert dropped == len(losses) == len(after_loss)
    with_fec = sum(opus.packet_has_lbrr(p) for p in after_loss)
    # The sender put FEC into most packets of voiced audio, and exactly those frames came back
    # from it; a loss before a packet without FEC (a pause) was concealed.
    assert with_fec >= dropped // 2
    assert stats.recovered == with_fec and stats.concealed == dropped - with_fec
    assert len(frames) >= 300


# -- outbound: the playout track gives back latency that stalls added ---------------------


async def test_a_live_stream_lead_is_trimmed_back_to_the_floor_only_in_silence() -> None:
    track = PlayoutTrack(rate=24000)
    frame = 480 * 2
    speech = _speech_like(0.02)
    silence = bytes(frame)
    # A stall left 15 extra frames queued in front of a real-time source.
    for i in range(17):
        track.push(silence if i % 3 == 0 else speech)
    loud = 0
    for i in range(150):  # 3 s: the source keeps feeding one frame per frame played
        track.push(silence if i % 4 == 0 else speech)
        out = await track.recv()
        loud += int(np.abs(out.to_ndarray()).max() > 1000)
    assert track.trimmed_frames >= 12
    # Only silence went: every speech frame pushed was played or is still queued.
    queued = [np.frombuffer(c, np.int16) for c in track._chunks]
    queued_speech = sum(1 for c in queued if np.abs(c).max() > 1000)
    pushed_speech = sum(1 for i in range(17) if i % 3) + sum(1 for i in range(150) if i % 4)
    assert loud + queued_speech == pushed_speech
    assert track.buffered_seconds <= (LEAD_FLOOR_FRAMES + 3) * 0.02
    assert track.frames_audio + track.frames_silence == 150


async def test_a_model_running_ahead_keeps_its_pauses() -> None:
    track = PlayoutTrack(rate=24000)
    speech, pause = _speech_like(0.5), bytes(int(0.3 * 24000) * 2)
    track.push(speech + pause + speech + pause + speech)  # 2.1 s at once: not a steady level
    played = [await track.recv() for _ in range(100)]
    assert track.trimmed_frames == 0
    quiet = sum(1 for f in played if not np.abs(f.to_ndarray()).any())
    assert quiet >= 28  # both 300 ms pauses were played in full


def test_model_chunks_follow_the_configured_length() -> None:
    try:
        chunks.configure_chunks(40)
        chunker = chunks.Chunker()
        assert chunker.push(np.zeros(320, np.int16)) == []
        assert [len(c) for c in chunker.push(np.zeros(320, np.int16))] == [1280]
        chunks.configure_chunks(20)
        assert [len(c) for c in chunks.Chunker().push(np.zeros(320, np.int16))] == [640]
        with pytest.raises(ValueError):
            chunks.configure_chunks(30)
    finally:
        chunks.configure_chunks(chunks.DEFAULT_CHUNK_MS)


async def test_after_running_dry_mid_speech_the_cushion_grows_to_two_frames() -> None:
    track = PlayoutTrack(rate=24000)
    speech = _speech_like(0.02)
    silence = bytes(480 * 2)
    track.push(speech)
    await track.recv()
    await track.recv()  # ran dry mid-speech: a late frame upstream
    assert track.underruns == 1
    for i in range(60):  # a live source with a steady lead of 4 frames and pauses
        for _ in range(4 if i == 0 else 1):
            track.push(silence if i % 2 else speech)
        await track.recv()
    # Trimmed back, but to the two-frame cushion now (one frame on a clean stream): two
    # frames queued before each frame is taken, one left after.
    assert track.trimmed_frames >= 1
    assert round(track.buffered_seconds / 0.02) == 1
