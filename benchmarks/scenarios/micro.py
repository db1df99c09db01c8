"""Per-frame costs on the media hot path: what each choice in ``voicegate.rtcpatch`` saves.

CPU microseconds per 20 ms frame (best of 3 passes over real speech), in this process:
- outbound Opus: aiortc's ``OpusEncoder`` (stereo 96 kbit/s, complexity 10, its resampler)
  against voicegate's mono libopus encoder in each mode considered (lowdelay/CELT, voip,
  voip + FEC), with the bitrate each produced;
- inbound Opus decode: aiortc's ``OpusDecoder`` (48 kHz stereo) + resample to 16 kHz mono,
  against a direct libopus decode to 16 kHz mono; PLC and FEC recovery;
- the RTP audio level: aiortc's pure-Python loop against the numpy version;
- the thread hand-off aiortc pays per frame: ``run_in_executor`` of the encode, against
  calling it inline (measured as wall time per frame with 50 frames in flight).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import rtp
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from voicegate.media import opus
from voicegate.media import patch as rtcpatch
from voicegate.testing.signals import speech


def _best_us(fn: Callable[[Any], Any], items: list[Any], passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - t0) / len(items) * 1e6)
    return round(best, 1)


def _frames(rate: int, seconds: float = 4.0) -> list[av.AudioFrame]:
    pcm = speech(rate, seconds)
    n = rate // 50
    out = []
    for i in range(0, len(pcm) - n, n):
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(pcm[i : i + n].tobytes())
        frame.sample_rate = rate
        frame.pts = i
        frame.time_base = Fraction(1, rate)
        out.append(frame)
    return out


def _encoder(
    application: int, complexity: int = 5, fec: bool = False, loss_percent: int = 0
) -> opus.Encoder:
    """voicegate's mono encoder at the track's 24 kHz and 32 kbit/s, in one mode considered."""
    return opus.Encoder(
        24000, bitrate=32000, complexity=complexity, fec=fec, loss_percent=loss_percent,
        application=application,
    )  # fmt: skip


def run() -> dict[str, Any]:
    original_level = rtp.compute_audio_level_dbov
    if rtcpatch.applied():  # measure aiortc's own function, not the patched one
        original_level = rtcpatch._originals["audio_level"]
    f24 = _frames(24000)
    f48 = _frames(48000)
    results: dict[str, Any] = {"libopus": opus.version()}

    enc: dict[str, Any] = {}
    aiortc_enc = OpusEncoder()
    enc["aiortc OpusEncoder (stereo 96k, c10), 24 kHz in"] = {
        "us": _best_us(lambda f: aiortc_enc.encode(f), f24),
        "kbps": 96,
    }
    for label, e in (
        ("voicegate lowdelay/CELT 32k c5 (default)", _encoder(2051)),
        ("voicegate voip/SILK-hybrid 32k c5", _encoder(opus.APPLICATION_VOIP)),
        (
            "voicegate voip 32k c5 + in-band FEC (10% loss)",
            _encoder(opus.APPLICATION_VOIP, fec=True, loss_percent=10),
        ),
        ("voicegate lowdelay 32k c0", _encoder(2051, complexity=0)),
    ):
        pcm = [bytes(f.planes[0])[: f.samples * 2] for f in f24]
        sizes = [len(e.encode(p)) for p in pcm]
        enc[label] = {"us": _best_us(e.encode, pcm), "kbps": round(np.mean(sizes) * 8 * 50 / 1000)}
    speech_enc = rtcpatch.SpeechEncoder(rtcpatch.OutboundOpus())
    silence = _frames(24000, 1.0)
    for f in silence:
        f.planes[0].update(bytes(960))
    enc["voicegate SpeechEncoder, silence (reuses the silence packet)"] = {
        "us": _best_us(lambda f: speech_enc.encode(f), silence),
        "kbps": None,
    }
    results["encode"] = enc

    packets = [opus.Encoder(48000, fec=True, loss_percent=10).encode(
        bytes(f.planes[0])[: f.samples * 2]) for f in f48]  # fmt: skip
    dec: dict[str, float] = {}
    aiortc_dec = OpusDecoder()
    to16 = av.AudioResampler(format="s16", layout="mono", rate=16000)

    def aiortc_path(p: bytes) -> None:
        for frame in aiortc_dec.decode(JitterFrame(p, 0)):
            assert isinstance(frame, av.AudioFrame)
            for out in to16.resample(frame):
                out.to_ndarray()

    dec["aiortc OpusDecoder (48k stereo) + resample to 16k mono"] = _best_us(aiortc_path, packets)
    d16 = opus.Decoder(16000)
    dec["voicegate libopus decode straight to 16k mono"] = _best_us(d16.decode, packets)
    dec["voicegate PLC, one 20 ms frame"] = _best_us(lambda _: d16.conceal(320), packets[:200])
    dec["voicegate FEC recovery, one 20 ms frame"] = _best_us(
        lambda p: d16.recover(p, 320), packets[:200]
    )
    results["decode"] = dec

    level = {
        "aiortc compute_audio_level_dbov (pure Python), 24k mono": _best_us(original_level, f24),
        "voicegate audio_level_dbov (numpy), 24k mono": _best_us(rtcpatch.audio_level_dbov, f24),
    }
    diffs = [abs(original_level(f) - rtcpatch.audio_level_dbov(f)) for f in f24]
    level["max difference (dB)"] = float(max(diffs))
    results["audio_level"] = level

    results["handoff"] = asyncio.run(_handoff(f24))
    return results


async def _handoff(frames: list[av.AudioFrame]) -> dict[str, float]:
    """Wall/CPU time per frame for 50 concurrent encodes: inline vs run_in_executor."""
    loop = asyncio.get_running_loop()
    encoders = [opus.Encoder(24000, application=2051) for _ in range(50)]
    pcm = [bytes(f.planes[0])[: f.samples * 2] for f in frames[:100]]

    async def inline(e: opus.Encoder) -> None:
        for p in pcm:
            e.encode(p)
            await asyncio.sleep(0)

    async def threaded(e: opus.Encoder) -> None:
        for p in pcm:
            await loop.run_in_executor(None, e.encode, p)

    out = {}
    for name, fn in (("inline", inline), ("run_in_executor", threaded)):
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(fn(e) for e in encoders))
        n = len(encoders) * len(pcm)
        out[f"{name}: CPU us per frame"] = round((time.process_time() - c0) / n * 1e6, 1)
        out[f"{name}: wall us per frame"] = round((time.perf_counter() - t0) / n * 1e6, 1)
    return out


def main() -> None:
    print(json.dumps(run(), indent=2))


__all__ = ["main", "run"]
