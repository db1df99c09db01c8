"""voicegate's aiortc patches (voicegate.media.patch), each on its own: audio level (levels),
the opus encoder (encode), the receive path's ordering/concealment logic (receive), and a real
pair of patched peers on loopback."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from voicegate.audio import levels
from voicegate.media import encode, opus, receive
from voicegate.media import patch as rtcpatch
from voicegate.media.playout import PlayoutTrack

rtcpatch.apply()

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)


def _frame(pcm: np.ndarray, rate: int, pts: int, layout: str = "mono") -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    frame = av.AudioFrame(format="s16", layout=layout, samples=len(pcm) // channels)
    frame.planes[0].update(pcm.astype(np.int16).tobytes())
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


def _tone(n: int, rate: int, hz: float = 440.0, amp: float = 8000.0, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


# -- audio level ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "rate", "amp"),
    [("mono", 24000, 8000), ("mono", 48000, 300), ("stereo", 48000, 20000), ("mono", 16000, 3)],
)
def test_numpy_audio_level_equals_aiortc_within_1_db(layout: str, rate: int, amp: float) -> None:
    original = rtcpatch._originals["audio_level"]
    n = rate // 50 * (2 if layout == "stereo" else 1)
    rng = np.random.default_rng(1)
    for pcm in (_tone(n, rate, amp=amp), (rng.standard_normal(n) * amp).astype(np.int16)):
        frame = _frame(pcm, rate, 0, layout)
        assert abs(levels.audio_level_dbov(frame) - original(frame)) <= 1
    silent = _frame(np.zeros(n, np.int16), rate, 0, layout)
    assert levels.audio_level_dbov(silent) == original(silent) == -127


def test_aiortc_uses_the_numpy_audio_level() -> None:
    from aiortc import rtp

    assert rtp.compute_audio_level_dbov is levels.audio_level_dbov


# -- encoder -------------------------------------------------------------------------------


def test_encoder_one_packet_per_20ms_frame_with_timestamps_from_pts() -> None:
    enc = encode.SpeechEncoder(encode.OutboundOpus())
    decoder = opus.Decoder(24000)
    stamps = []
    for i, pts in enumerate([0, 480, 960, 960 + 480 * 5, 960 + 480 * 6]):
        payloads, ts = enc.encode(_frame(_tone(480, 24000, start=i * 480), 24000, pts))
        assert len(payloads) == 1
        assert len(decoder.decode(payloads[0])) == 480 * 2
        stamps.append(ts)
    # RTP clock is 48 kHz; a gap in pts becomes the same gap in the RTP timestamp, exactly.
    assert stamps == [0, 960, 1920, 1920 + 960 * 5, 1920 + 960 * 6]


def test_encoder_takes_stereo_any_rate_and_10ms_frames() -> None:
    enc = encode.SpeechEncoder(encode.OutboundOpus())
    stereo = np.repeat(_tone(960, 48000), 2)
    payloads, ts = enc.encode(_frame(stereo, 48000, 0, "stereo"))
    assert len(payloads) == 1 and ts == 0
    assert opus.packet_samples(payloads[0]) == 960
    ten = encode.SpeechEncoder(encode.OutboundOpus())
    assert ten.encode(_frame(_tone(160, 16000), 16000, 0)) == ([], None)
    payloads, ts = ten.encode(_frame(_tone(160, 16000), 16000, 160))
    assert len(payloads) == 1 and ts == 0
    odd = encode.SpeechEncoder(encode.OutboundOpus())
    got = [odd.encode(_frame(_tone(441, 22050), 22050, i * 441)) for i in range(6)]
    assert sum(len(p) for p, _ in got) >= 4  # resampled to 48 kHz, still one packet per 20 ms


def test_encoder_reuses_the_silence_packet_after_a_few_frames() -> None:
    enc = encode.SpeechEncoder(encode.OutboundOpus())
    silence = np.zeros(480, np.int16)
    packets = [enc.encode(_frame(silence, 24000, i * 480))[0][0] for i in range(10)]
    assert enc.frames_reused == 10 - encode.SILENT_FRAMES_BEFORE_REUSE
    assert len(set(packets[encode.SILENT_FRAMES_BEFORE_REUSE :])) == 1
    enc.encode(_frame(_tone(480, 24000), 24000, 4800))
    assert enc.frames_encoded == encode.SILENT_FRAMES_BEFORE_REUSE + 1


# -- receive path (ordering, concealment), fed packets directly ------------------------------


class _Receiver:
    """What AudioReceivePath reads from its RTCRtpReceiver: the codec table and the track."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__codecs = {96: OPUS}
        self._track = RemoteStreamTrack(kind="audio")


class _Packet:
    def __init__(self, seq: int, ts: int, data: bytes) -> None:
        self.sequence_number = seq & 0xFFFF
        self.timestamp = ts & 0xFFFFFFFF
        self.payload_type = 96
        self._data = data
        self.payload = data


def _packets(count: int, fec: bool = True, first_seq: int = 65530) -> list[_Packet]:
    enc = opus.Encoder(48000, application=opus.APPLICATION_VOIP, fec=fec, loss_percent=20)
    out = []
    for i in range(count):
        data = enc.encode(_tone(960, 48000, hz=300, start=i * 960).tobytes())
        out.append(_Packet(first_seq + i, 4_294_960_000 + i * 960, data))
    return out


def _drain(receiver: _Receiver) -> list[av.AudioFrame]:
    q = receiver._track._queue
    return [q.get_nowait() for _ in range(q.qsize())]


async def test_in_order_packets_are_delivered_at_once_across_wraparound() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    for i, packet in enumerate(_packets(12)):
        path.add(packet)  # type: ignore[arg-type]
        frames = _drain(receiver)
        assert len(frames) == 1  # no prefetch: each packet is a frame the moment it arrives
        assert frames[0].pts == i * 320 and frames[0].sample_rate == 16000
        assert frames[0].layout.name == "mono" and frames[0].samples == 320
    assert path.stats.decoded == 12 and path.stats.concealed == 0


async def test_one_lost_packet_costs_one_frame_recovered_from_fec() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    packets = _packets(10)
    for packet in packets[:5] + packets[6:]:
        path.add(packet)  # type: ignore[arg-type]
    frames = _drain(receiver)
    assert [f.pts for f in frames] == [i * 320 for i in range(10)]  # no time skipped
    assert path.stats.recovered == 1 and path.stats.concealed == 0
    lost = np.frombuffer(bytes(frames[5].planes[0]), np.int16)[:320].astype(float)
    assert np.sqrt(np.mean(lost * lost)) > 1000  # FEC brought the tone back, not silence


async def test_a_burst_without_fec_is_concealed_and_a_late_packet_raises_the_hold() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    packets = _packets(12, fec=False)
    for packet in packets[:3] + packets[6:]:
        path.add(packet)  # type: ignore[arg-type]
    frames = _drain(receiver)
    assert [f.pts for f in frames] == [i * 320 for i in range(12)]
    # No FEC in the packet after the burst: all three frames are concealment, none "recovered".
    assert path.stats.concealed == 3 and path.stats.recovered == 0
    assert path.hold == 0
    path.add(packets[4])  # type: ignore[arg-type]
    assert path.stats.late == 1 and not _drain(receiver)
    assert path.hold == receive.HOLD_STEP


async def test_with_a_hold_a_reordered_packet_is_waited_for_not_concealed() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    path.hold = 0.05
    packets = _packets(6)
    path.add(packets[0])  # type: ignore[arg-type]
    path.add(packets[2])  # type: ignore[arg-type]
    assert len(_drain(receiver)) == 1  # packet 2 waits behind the gap
    path.add(packets[1])  # type: ignore[arg-type]
    assert [f.pts for f in _drain(receiver)] == [320, 640]
    path.add(packets[4])  # type: ignore[arg-type]
    assert not _drain(receiver)
    async with asyncio.timeout(2):
        frames = [await receiver._track.recv() for _ in range(2)]
    assert [f.pts for f in frames] == [960, 1280]  # hold expired: FEC for 3
    assert path.stats.recovered == 1 and path.stats.late == 0


async def test_empty_and_corrupt_packets_become_one_concealed_frame_each() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    packets = _packets(4)
    packets[1]._data = b""
    packets[2]._data = b"\xff\xff\xff"  # an invalid Opus TOC/length
    for packet in packets:
        path.add(packet)  # type: ignore[arg-type]
    frames = _drain(receiver)
    assert [(f.pts, f.samples) for f in frames] == [(i * 320, 320) for i in range(4)]
    assert path.stats.concealed == 2 and path.stats.decoded == 2


async def test_close_ends_the_track_and_the_queue_is_bounded() -> None:
    receiver = _Receiver()
    path = receive.AudioReceivePath(receiver, 16000)  # type: ignore[arg-type]
    enc = opus.Encoder(48000)
    pcm = np.zeros(960, np.int16).tobytes()
    for i in range(receive.MAX_QUEUED_FRAMES + 20):
        path.add(_Packet(i, i * 960, enc.encode(pcm)))  # type: ignore[arg-type]
    assert receiver._track._queue.qsize() == receive.MAX_QUEUED_FRAMES
    assert path.stats.dropped_unread == 20
    path.close()
    track = receiver._track
    with pytest.raises(MediaStreamError):
        while True:
            await track.recv()


# -- a real pair of patched peers on loopback ---------------------------------------------


async def _pair(track: Any) -> tuple[RTCPeerConnection, RTCPeerConnection, list[Any]]:
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: list[Any] = []
    callee.on("track", received.append)
    caller.addTrack(track)
    await caller.setLocalDescription(await caller.createOffer())
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(
        RTCSessionDescription(sdp=callee.localDescription.sdp, type="answer")
    )
    return caller, callee, received


async def test_patched_peers_decode_inline_at_16k_with_continuous_pts() -> None:
    threads_before = {t.name for t in threading.enumerate()}
    track = PlayoutTrack(rate=24000)
    track.push(_tone(24000 * 2, 24000).tobytes())
    caller, callee, received = await _pair(track)
    try:
        assert "useinbandfec=1" in caller.localDescription.sdp
        assert len(received) == 1  # the track event fires during setRemoteDescription
        async with asyncio.timeout(10):
            frames = [await received[0].recv() for _ in range(60)]
        assert {f.sample_rate for f in frames} == {16000}
        assert {f.samples for f in frames} == {320}
        pts = [f.pts for f in frames]
        assert pts == list(range(pts[0], pts[0] + 320 * 60, 320))
        loud = [f for f in frames if np.abs(f.to_ndarray()).max() > 2000]
        assert len(loud) > 30  # the tone made it through the CELT encoder and back
        new_threads = {t.name for t in threading.enumerate()} - threads_before
        assert not any("decoder" in name for name in new_threads)
        receiver = callee.getTransceivers()[0].receiver
        path = receive.receive_path(receiver)
        assert path is not None and path.stats.concealed == 0
    finally:
        await caller.close()
        await callee.close()
    # Closing the receiver ends its track, as aiortc's decoder thread did.
    with pytest.raises(MediaStreamError):
        async with asyncio.timeout(5):
            while True:
                await received[0].recv()
