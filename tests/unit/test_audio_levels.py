"""``audio.levels.frame_rms``: a level per frame that agrees with ``rms`` of each frame."""

from __future__ import annotations

import numpy as np

from voicegate.audio.levels import frame_rms, rms


def test_frame_rms_is_the_rms_of_each_frame() -> None:
    rng = np.random.default_rng(7)
    signal = rng.integers(-32768, 32767, 320 * 5, dtype=np.int16)
    signal[320:640] = 0  # one silent frame
    levels = frame_rms(signal, 320)
    assert levels.shape == (5,)
    assert levels[1] == 0.0
    for i, level in enumerate(levels):
        assert np.isclose(level, rms(signal[i * 320 : (i + 1) * 320]))
