"""The paced outbound track: exact 20 ms frames, continuous timestamps, silence, flush, bounds."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from voicegate.media.playout import PlayoutTrack


def _pcm(seconds: float, value: int = 1000, rate: int = 24000) -> bytes:
    return np.full(int(seconds * rate), value, dtype=np.int16).tobytes()


async def test_frames_are_20ms_with_continuous_pts_and_silence_when_idle() -> None:
    track = PlayoutTrack(rate=24000)
    frames = [await track.recv() for _ in range(3)]
    assert [f.samples for f in frames] == [480, 480, 480]
    assert [f.pts for f in frames] == [0, 480, 960]
    assert all(not np.any(f.to_ndarray()) for f in frames)
    track.push(_pcm(0.05))  # 2.5 frames
    audio = [await track.recv() for _ in range(4)]
    assert [f.pts for f in audio] == [1440, 1920, 2400, 2880]
    values = [int(np.abs(f.to_ndarray()).max()) for f in audio]
    assert values == [1000, 1000, 1000, 0]
    last = audio[2].to_ndarray().reshape(-1)
    assert np.count_nonzero(last) == 240  # the half frame is padded with silence
    assert track.frames_audio == 3


async def test_pacing_follows_the_clock_without_bursts() -> None:
    track = PlayoutTrack(rate=24000)
    track.push(_pcm(1.0))
    loop = asyncio.get_running_loop()
    await track.recv()
    t0 = loop.time()
    for _ in range(10):
        await track.recv()
    elapsed = loop.time() - t0
    # 10 frames are due 200 ms after the first; the track must not hand them out early.
    assert elapsed >= 0.19


async def test_flush_drops_queued_audio_at_once() -> None:
    events: list[str] = []
    track = PlayoutTrack(
        rate=24000,
        on_started=lambda t: events.append("start"),
        on_stopped=lambda interrupted: events.append(f"stop:{interrupted}"),
    )
    track.push(_pcm(2.0))
    first = await track.recv()
    assert np.any(first.to_ndarray())
    dropped = track.flush()
    assert dropped == 48000 - 480
    nxt = await track.recv()
    assert not np.any(nxt.to_ndarray())
    assert nxt.pts == first.pts + 480
    assert events == ["start", "stop:True"]
    assert track.buffered_seconds == 0


async def test_turn_done_reports_stop_when_drained() -> None:
    events: list[str] = []
    track = PlayoutTrack(on_stopped=lambda i: events.append(f"stop:{i}"))
    track.push(_pcm(0.04))
    track.mark_turn_done()
    for _ in range(3):
        await track.recv()
    assert events == ["stop:False"]


def test_buffer_is_bounded() -> None:
    track = PlayoutTrack(rate=24000, max_seconds=1.0)
    track.push(_pcm(0.8))
    track.push(_pcm(0.8))
    assert track.buffered_seconds == pytest.approx(1.0)
    assert track.dropped_overflow_bytes == int(0.6 * 24000) * 2


async def test_stopped_track_raises() -> None:
    track = PlayoutTrack()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
