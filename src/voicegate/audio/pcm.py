"""Raw PCM as voicegate carries it: mono 16-bit little-endian samples, as bytes or int16 arrays.

The conversions between those forms and PyAV frames live here once, so a module that only
needs "these bytes as samples" or "these samples as a frame" does not reach into the media
path for it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import av

__all__ = ["Int16Array", "Pcm", "pcm_frame", "samples"]

Int16Array = npt.NDArray[np.int16]
Pcm = Int16Array | bytes | bytearray | memoryview
"""Audio in any of the forms voicegate passes it around: samples or their raw bytes."""


def samples(pcm: Pcm) -> Int16Array:
    """``pcm`` as int16 samples (a view, no copy, for raw little-endian bytes)."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        return np.frombuffer(pcm, dtype="<i2")
    return pcm


def pcm_frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    """A mono s16 AudioFrame over raw PCM bytes, with pts in samples (time base 1/rate)."""
    import av  # here, not at the top: the level and chunk helpers need numpy only

    count = len(pcm) // 2
    frame = av.AudioFrame(format="s16", layout="mono", samples=count)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame
