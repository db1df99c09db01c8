"""Resampling and framing: sample counts, continuity, gap filling."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from voicegate.audio.chunks import (
    DEFAULT_CHUNK_MS,
    Chunker,
    configure_chunks,
    model_chunk_seconds,
)
from voicegate.audio.levels import dbfs, rms
from voicegate.audio.pcm import pcm_frame
from voicegate.audio.resample import InboundResampler


def _stereo48(samples: np.ndarray, pts: int) -> av.AudioFrame:
    inter = np.repeat(samples.astype(np.int16), 2).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(inter, format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = Fraction(1, 48000)
    return frame


def test_resampler_48k_stereo_to_16k_mono_keeps_count_and_tone() -> None:
    rs = InboundResampler()
    t = np.arange(48000) / 48000
    tone = (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = np.concatenate(
        [rs.process(_stereo48(tone[i : i + 960], i)) for i in range(0, 48000, 960)]
    )
    # One second in, one second out (less the resampler's small delay).
    assert 16000 - 64 <= out.size <= 16000
    spectrum = np.abs(np.fft.rfft(out[1000:15000].astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 16000 / 14000
    assert abs(peak_hz - 440) < 3
    assert rms(out[1000:]) == pytest.approx(10000 / np.sqrt(2), rel=0.05)
    assert rs.gap_samples == 0


def test_resampler_fills_gaps_with_silence() -> None:
    rs = InboundResampler()
    frame = np.full(960, 5000, dtype=np.int16)
    first = rs.process(_stereo48(frame, 0))
    # Three frames (60 ms) lost: the next frame arrives with pts 4 * 960.
    second = rs.process(_stereo48(frame, 4 * 960))
    assert rs.gap_samples == 3 * 320
    assert first.size > 0
    assert np.all(second[: 3 * 320] == 0)  # exactly the lost 60 ms, as silence, first
    assert np.any(second[3 * 320 :])


def test_chunker_reframes_exactly() -> None:
    ch = Chunker(512)
    got: list[bytes] = []
    total = 0
    for n in (320, 100, 7, 1000, 333, 2):
        got += ch.push(np.arange(total, total + n, dtype=np.int16))
        total += n
    assert all(len(c) == 1024 for c in got)
    assert len(got) == total // 512
    assert ch.pending_samples == total % 512
    joined = np.frombuffer(b"".join(got), dtype=np.int16)
    assert np.array_equal(joined, np.arange(len(got) * 512, dtype=np.int16))


@pytest.mark.parametrize("ms", [20, 32, 40])
def test_every_chunk_length_is_cut_from_20_ms_frames_with_nothing_held_back(ms: int) -> None:
    configure_chunks(ms)
    try:
        ch = Chunker()
        frame = 320  # 20 ms at 16 kHz
        sent = 0
        for i in range(50):
            out = ch.push(np.full(frame, i, dtype=np.int16))
            sent += len(out)
            # A chunk leaves the moment its last sample has arrived: never more than one
            # chunk's worth is pending.
            assert ch.pending_samples < ms * 16
        assert sent == 50 * frame // (ms * 16)
        assert abs(model_chunk_seconds() - ms / 1000) < 1e-9
    finally:
        configure_chunks(DEFAULT_CHUNK_MS)


@pytest.mark.parametrize("ms", [0, 10, 30, 33, 120])
def test_unsupported_chunk_lengths_are_refused(ms: int) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_chunks(ms)


def test_levels() -> None:
    assert dbfs(np.zeros(100, dtype=np.int16)) == -127.0
    full = np.full(100, 32767, dtype=np.int16)
    assert dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert rms(np.zeros(0, dtype=np.int16)) == 0.0


def test_pcm_frame() -> None:
    frame = pcm_frame(bytes(960), 24000, 480)
    assert frame.samples == 480 and frame.sample_rate == 24000
    assert frame.pts == 480 and frame.time_base == Fraction(1, 24000)
    assert frame.format.name == "s16" and frame.layout.name == "mono"
