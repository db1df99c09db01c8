"""Model input chunks: how much caller audio goes into one model audio event.

The chunk length is process-wide (``--model-chunk-ms``, set once at start through
``configure_chunks``): the inbound pump cuts caller audio with a ``Chunker`` of that size and
the conversation reads the same length (``model_chunk_seconds``) to pace silence and replay.
The length is a duration; its size in samples follows the rate the backend takes
(``chunk_samples``: Bedrock's ``--model-input-rate``, 16 kHz for the in-process brains). Runs
once per 20 ms frame per call, so it avoids per-sample Python loops.
"""

from __future__ import annotations

from typing import Final

from voicegate.audio.pcm import Int16Array
from voicegate.sonic.events import INPUT_SAMPLE_RATE

__all__ = [
    "CHUNK_SAMPLES",
    "DEFAULT_CHUNK_MS",
    "MODEL_CHUNK_MS_CHOICES",
    "Chunker",
    "chunk_samples",
    "configure_chunks",
    "model_chunk_seconds",
]

DEFAULT_CHUNK_MS: Final = 20
MODEL_CHUNK_MS_CHOICES: Final = (20, 32, 40, 60, 80, 100)
"""The chunk lengths ``--model-chunk-ms`` accepts (benchmarks/README.md measures them)."""
CHUNK_SAMPLES: Final = INPUT_SAMPLE_RATE * DEFAULT_CHUNK_MS // 1000
"""Default samples per chunk sent to the model: 20 ms at 16 kHz, i.e. every received frame goes
to the model the moment it is decoded. Larger chunks cost fewer model events per second (each
costs ~0.3-0.6 ms of CPU on the Bedrock path) but add up to their length on the way in;
``configure_chunks`` (``--model-chunk-ms``) chooses. See benchmarks/README.md."""
_chunk_ms = DEFAULT_CHUNK_MS


def model_chunk_seconds() -> float:
    """Length of the caller-audio chunks the inbound pump hands the conversation."""
    return _chunk_ms / 1000


def chunk_samples(rate: int = INPUT_SAMPLE_RATE) -> int:
    """Samples in one model chunk at ``rate`` (every choice is whole at 8, 16 and 24 kHz)."""
    return rate * _chunk_ms // 1000


def configure_chunks(ms: int) -> None:
    """Model input chunk length for every call from now on (one of ``MODEL_CHUNK_MS_CHOICES``).

    A length that is not a multiple of the 20 ms frame (32 ms, AWS's samples' 512 samples) is
    cut from the running sample stream: a frame completes at most one chunk, the rest waits."""
    global _chunk_ms
    if ms not in MODEL_CHUNK_MS_CHOICES:
        raise ValueError(f"chunk length {ms} ms must be one of {MODEL_CHUNK_MS_CHOICES}")
    _chunk_ms = ms


class Chunker:
    """Re-frames a stream of samples into fixed-size chunks (bytes), keeping the remainder."""

    def __init__(self, samples: int | None = None) -> None:
        samples = chunk_samples() if samples is None else samples
        self.samples = samples
        self._nbytes = samples * 2
        self._buf = bytearray()

    def push(self, pcm: Int16Array | bytes) -> list[bytes]:
        self._buf += pcm if isinstance(pcm, bytes) else pcm.tobytes()
        out: list[bytes] = []
        n = self._nbytes
        while len(self._buf) >= n:
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]
        return out

    @property
    def pending_samples(self) -> int:
        return len(self._buf) // 2
