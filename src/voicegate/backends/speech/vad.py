"""Streaming Silero v6 voice activity detection and end-pointing, 512 samples at a time.

The model is the ONNX file that ships inside faster-whisper (``assets/silero_vad_v6.onnx``), run
frame by frame with onnxruntime: about 50 us per 32 ms frame, so it runs inline on the event loop.
Silero, unlike webrtcvad, holds up in noise (measured on spoken test sets here): it is
what decides turns for the embedded brain.

One :class:`SileroModel` (the ONNX session, thread-safe and stateless) is shared by the process;
each call owns a :class:`VadStream` with the recurrent state (``h``, ``c``), the 64-sample context
the model expects in front of every frame, the pre-roll ring and the segment being collected.

Events: :class:`SpeechStart`; :class:`SpeechPause` once ~200 ms into each silence inside speech
(the segment so far, so ASR can start early); :class:`SpeechEnd` when the hangover confirms it.
"""

from __future__ import annotations

import importlib.util
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from voicegate.backends.speech import SpeechModelError, missing_package

__all__ = [
    "CONTEXT_SAMPLES",
    "FRAME_SAMPLES",
    "Float32Array",
    "SAMPLE_RATE",
    "STATE_SHAPE",
    "SileroModel",
    "SpeechEnd",
    "SpeechPause",
    "SpeechStart",
    "VadConfig",
    "VadEvent",
    "VadStream",
    "silero_model_path",
]

SAMPLE_RATE: Final = 16000
FRAME_SAMPLES: Final = 512
"""Silero v6 at 16 kHz takes exactly 512 new samples (32 ms) per call."""
CONTEXT_SAMPLES: Final = 64
"""...preceded by the last 64 samples of the previous frame (576 in all)."""
STATE_SHAPE: Final = (1, 1, 128)

Float32Array = NDArray[np.float32]


def silero_model_path() -> Path:
    """The Silero v6 ONNX file inside the installed faster-whisper package."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise missing_package("faster-whisper", ModuleNotFoundError("faster_whisper"))
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise SpeechModelError(f"the Silero VAD model is missing from faster-whisper: {path}")
    return path


class SileroModel:
    """The ONNX session. ``InferenceSession.run`` is thread-safe, so all calls share one."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_package("onnxruntime", exc) from exc
        opts = ort.SessionOptions()
        # One frame is tiny: extra threads would only add wake-up latency and contend with ASR.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        # Tensors are tiny and per frame; the arena only adds bookkeeping (~20 % per run here).
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        self.path = path or silero_model_path()
        self._session: Any = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def __call__(
        self, window: Float32Array, h: Float32Array, c: Float32Array
    ) -> tuple[float, Float32Array, Float32Array]:
        """Speech probability of one 576-sample window, and the next recurrent state."""
        prob, hn, cn = self._session.run(None, {"input": window[np.newaxis, :], "h": h, "c": c})
        return float(prob.reshape(-1)[0]), hn, cn


@dataclass(frozen=True, slots=True)
class VadConfig:
    """End-pointing rules; the defaults are the measured ones from the research notes."""

    threshold: float = 0.5
    """A frame at or above this probability is speech."""
    neg_threshold: float = 0.35
    """Hysteresis: inside speech, only frames below this count as silence."""
    start_frames: int = 3
    """Consecutive speech frames needed to start a segment (rejects clicks)."""
    hangover_ms: int = 500
    """Silence that ends a segment (the turn's end-pointing delay)."""
    speculate_ms: int = 200
    """Silence after which the segment so far is offered as a :class:`SpeechPause`, so ASR can
    start before the hangover confirms the end (0: never). At or above ``tail_ms`` the offered
    audio is exactly what the confirmed end will carry if the user does not go on."""
    preroll_ms: int = 300
    """Audio kept from before the start decision, so the first syllable reaches the ASR."""
    tail_ms: int = 200
    """Silence kept after the last voiced frame (Whisper dislikes abrupt cuts)."""
    max_segment_s: float = 28.0
    """Whisper sees at most 30 s: a longer monologue is cut into segments of this length."""


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began; ``at_sample`` counts samples from the stream's start."""

    at_sample: int


@dataclass(frozen=True, slots=True)
class SpeechPause:
    """Speech has paused for ``speculate_ms``: the segment so far, to transcribe speculatively."""

    audio: Float32Array
    """What :class:`SpeechEnd` will carry if no speech follows before the hangover."""
    voiced_until: int
    """Samples from the stream's start to the end of the last voiced frame (names the pause)."""


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """A finished speech segment, ready for ASR."""

    audio: Float32Array
    """16 kHz mono float32 in [-1, 1]: pre-roll, speech and a short tail."""
    trailing_samples: int
    """Samples fed after the last voiced frame: how long ago speech really ended."""
    forced: bool = False
    """True when the segment was cut at ``max_segment_s`` rather than by silence."""
    voiced_until: int = -1
    """As in :class:`SpeechPause`: equal to a pause's value when that pause became this end."""


VadEvent = SpeechStart | SpeechPause | SpeechEnd


def _ms_to_frames(ms: float) -> int:
    return max(1, round(ms * SAMPLE_RATE / 1000 / FRAME_SAMPLES))


class VadStream:
    """Per-call VAD state: feed 16-bit PCM of any length, get start/end events back."""

    def __init__(self, model: SileroModel, config: VadConfig | None = None) -> None:
        self.model = model
        self.config = cfg = config or VadConfig()
        self._h: Float32Array = np.zeros(STATE_SHAPE, np.float32)
        self._c: Float32Array = np.zeros(STATE_SHAPE, np.float32)
        self._window: Float32Array = np.zeros(CONTEXT_SAMPLES + FRAME_SAMPLES, np.float32)
        self._pending = bytearray()  # < one frame of bytes, between calls
        self._hangover = _ms_to_frames(cfg.hangover_ms)
        self._tail = min(_ms_to_frames(cfg.tail_ms), self._hangover)
        self._speculate = _ms_to_frames(cfg.speculate_ms) if cfg.speculate_ms > 0 else 0
        self._max_frames = _ms_to_frames(cfg.max_segment_s * 1000)
        # Frames before a start decision: the pre-roll plus the start run itself.
        self._recent: deque[Float32Array] = deque(
            maxlen=_ms_to_frames(cfg.preroll_ms) + cfg.start_frames
        )
        self._run = 0  # consecutive speech frames while not in speech
        self._segment: list[Float32Array] = []
        self._silent = 0  # consecutive silent frames while in speech
        self.in_speech = False
        self.samples = 0
        self.last_prob = 0.0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Run the model over every whole frame now available (the remainder waits)."""
        self._pending += pcm
        usable = len(self._pending) - len(self._pending) % (FRAME_SAMPLES * 2)
        if usable == 0:
            return []
        samples = np.frombuffer(bytes(self._pending[:usable]), dtype="<i2")
        del self._pending[:usable]
        events: list[VadEvent] = []
        scaled = samples.astype(np.float32) / 32768.0
        for start in range(0, len(scaled), FRAME_SAMPLES):
            event = self._frame(scaled[start : start + FRAME_SAMPLES])
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: Float32Array) -> VadEvent | None:
        cfg = self.config
        window = self._window
        window[:CONTEXT_SAMPLES] = window[-CONTEXT_SAMPLES:]
        window[CONTEXT_SAMPLES:] = frame
        prob, self._h, self._c = self.model(window, self._h, self._c)
        self.last_prob = prob
        self.samples += FRAME_SAMPLES
        frame = frame.copy()
        if not self.in_speech:
            self._recent.append(frame)
            self._run = self._run + 1 if prob >= cfg.threshold else 0
            if self._run < cfg.start_frames:
                return None
            self.in_speech = True
            self._segment = list(self._recent)
            self._recent.clear()
            self._silent = 0
            return SpeechStart(self.samples - cfg.start_frames * FRAME_SAMPLES)
        self._segment.append(frame)
        self._silent = self._silent + 1 if prob < cfg.neg_threshold else 0
        if self._silent >= self._hangover:
            return self._end(self._keep(), forced=False)
        if 0 < self._speculate == self._silent and self._speculate < self._hangover:
            return SpeechPause(np.concatenate(self._segment[: self._keep()]), self._voiced_until())
        if len(self._segment) >= self._max_frames:
            return self._end(len(self._segment), forced=True)
        return None

    def _keep(self) -> int:
        """Frames of the segment to hand on: up to the last voiced one, plus the tail."""
        return len(self._segment) - self._silent + min(self._tail, self._silent)

    def _voiced_until(self) -> int:
        return self.samples - self._silent * FRAME_SAMPLES

    def _end(self, keep: int, *, forced: bool) -> SpeechEnd:
        audio = np.concatenate(self._segment[:keep])
        trailing = self._silent * FRAME_SAMPLES
        voiced_until = self._voiced_until()
        self._segment = []
        self._silent = 0
        self._run = 0
        self.in_speech = False
        return SpeechEnd(audio, trailing, forced, voiced_until)
