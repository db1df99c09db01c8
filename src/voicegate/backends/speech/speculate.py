"""Speculative transcription: start Whisper when speech pauses, keep it if the pause was the end.

The VAD confirms the end of a turn only after its hangover (~500 ms of silence), and a decode
takes ~150-400 ms more; run one after the other, they are most of a turn's latency. So when the
VAD reports a :class:`~voicegate.backends.speech.vad.SpeechPause` (~200 ms of silence) the segment
so far is decoded at once. If that pause becomes the confirmed :class:`SpeechEnd` (same last voiced
sample, same audio), the turn takes the speculative transcript; if the user spoke on, the result
is discarded and the confirmed end is decoded as before. The audio is compared sample for sample,
so a kept transcript is exactly the one the confirmed end would have produced.

The process-wide decode gate is respected: a speculation starts only when the gate has a free
slot (it never queues in front of a confirmed turn's decode), runs through ``run_gated`` like any
decode, and each stream has at most one in flight. A discarded decode that is still running
keeps its slot until its thread finishes, as ``run_gated`` promises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from voicegate.backends.speech.models import run_gated

Transcribe = Callable[[NDArray[np.float32]], str]
Decoded = tuple[str, float]
"""A transcript and the milliseconds its decode took."""


def _timed(transcribe: Transcribe, audio: NDArray[np.float32]) -> Decoded:
    started = time.perf_counter()
    text = transcribe(audio)
    return text, (time.perf_counter() - started) * 1000


@dataclass(slots=True)
class _Guess:
    voiced_until: int
    audio: NDArray[np.float32]
    task: asyncio.Task[Decoded]


class Speculator:
    """One stream's speculative decodes: at most one in flight."""

    def __init__(self, gate: asyncio.Semaphore, transcribe: Transcribe) -> None:
        self._gate = gate
        self._transcribe = transcribe
        self._guess: _Guess | None = None
        self.started = 0
        self.used = 0
        self.discarded = 0
        self.skipped = 0
        """Pauses not speculated on: the gate was busy or this stream's last guess still ran."""

    @property
    def pending(self) -> asyncio.Task[Decoded] | None:
        """The current speculative decode, if any (tests wait on it)."""
        return None if self._guess is None else self._guess.task

    def offer(self, voiced_until: int, audio: NDArray[np.float32]) -> None:
        """Speech paused: decode ``audio`` now if a decode slot is free."""
        guess = self._guess
        if guess is not None and not guess.task.done():
            self.skipped += 1  # the user spoke on after a pause still being decoded
            return
        if self._gate.locked():
            self.skipped += 1  # other calls' decodes come first; decode at the confirmed end
            return
        if guess is not None:
            self.discarded += 1  # a finished guess about an earlier pause: the user spoke on
        task = asyncio.ensure_future(run_gated(self._gate, _timed, self._transcribe, audio))
        task.add_done_callback(_retrieve)
        self._guess = _Guess(voiced_until, audio, task)
        self.started += 1

    def claim(self, voiced_until: int, audio: NDArray[np.float32]) -> asyncio.Task[Decoded] | None:
        """The confirmed end: its speculative decode if that decoded this very audio."""
        guess, self._guess = self._guess, None
        if guess is None:
            return None
        same = guess.voiced_until == voiced_until and np.array_equal(guess.audio, audio)
        if same and not guess.task.cancelled():
            self.used += 1
            return guess.task
        self.discarded += 1
        guess.task.cancel()  # nobody waits for it; run_gated keeps the slot until it is done
        return None

    def cancel(self) -> None:
        guess, self._guess = self._guess, None
        if guess is not None:
            guess.task.cancel()


def _retrieve(task: asyncio.Task[Decoded]) -> None:
    """A discarded guess that failed is not an unhandled error."""
    if not task.cancelled():
        task.exception()


__all__ = ["Decoded", "Speculator"]
