"""The files of one recorded call, written by the recorder's writer thread only.

``user.wav`` and ``bot.wav`` are placed on the call's clock: each chunk carries its sample position
from the start of the recording, a gap (dropped chunks) becomes silence and an overlap is never
written twice, so both files keep the call's timeline and line up sample for sample.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from voicegate.sonic.events import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

USER_RATE: Final = INPUT_SAMPLE_RATE
"""The caller's audio is recorded as the model hears it."""
BOT_RATE: Final = OUTPUT_SAMPLE_RATE
"""The bot's audio is recorded as the model sends it."""
MAX_GAP_SECONDS: Final = 3600.0
"""A position further than this from a stream's end is a clock bug, not a gap to fill."""


@dataclass(slots=True)
class CallFiles:
    directory: Path
    wavs: dict[str, wave.Wave_write]
    written: dict[str, int]
    transcript: IO[str]


def open_call_files(root: Path, call_id: str) -> CallFiles:
    """Create ``<root>/<call id>/`` with the two WAV files and the transcript, open."""
    # A restarted call (same pc_id, new connection) gets a directory of its own.
    base = root / safe_name(call_id)
    directory, n = base, 1
    while directory.exists():
        n += 1
        directory = base.with_name(f"{base.name}-{n}")
    # Recordings are people's voices: only the server's user may list or read them (0700 for
    # the directories voicegate creates, 0600 for the files), whatever the process umask says.
    root.mkdir(parents=True, mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    wavs: dict[str, wave.Wave_write] = {}
    for stream, rate in (("user", USER_RATE), ("bot", BOT_RATE)):
        w = wave.open(str(private_file(directory / f"{stream}.wav")), "wb")  # noqa: SIM115 (kept open)
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        wavs[stream] = w
    transcript = open(private_file(directory / "transcript.jsonl"), "w", encoding="utf-8")  # noqa: SIM115 (kept open)
    return CallFiles(directory, wavs, {"user": 0, "bot": 0}, transcript)


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 (before anything is written to it); returns it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def write_audio(files: CallFiles, stream: str, position: int, pcm: bytes) -> None:
    written = files.written[stream]
    rate = USER_RATE if stream == "user" else BOT_RATE
    if position > written:
        gap = position - written
        if gap > MAX_GAP_SECONDS * rate:
            return
        files.wavs[stream].writeframes(bytes(2 * gap))  # dropped chunks become silence
        written = position
    skip = (written - position) * 2  # never rewrite what is already on disk
    if skip >= len(pcm):
        return
    data = pcm[skip:]
    files.wavs[stream].writeframes(data)
    files.written[stream] = written + len(data) // 2


def close_files(files: CallFiles) -> None:
    for w in files.wavs.values():
        w.close()
    files.transcript.close()


def safe_name(call_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id)[:128]
    return cleaned.lstrip(".") or "call"
