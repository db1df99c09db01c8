"""The echo brain: no models, plays each user turn back. For quick tests and small machines.

Turn-taking uses a cheap energy VAD with an adaptive noise floor (good for a quiet room or a
headset; it is not robust to noise, which is why the ``local`` brain uses Silero instead). The
transcript is a placeholder that says how much speech was heard.

Typed text (and a greeting instruction), which arrives as interactive USER text, is answered
with a text reply that quotes it and a beep per word (at most eight) as its audio: no speech
synthesis here, but the reply has the shape of a spoken one.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Final

import numpy as np

from voicegate.audio.levels import dbfs
from voicegate.audio.resample import resample_pcm16
from voicegate.backends.base import BackendStream
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic import Role
from voicegate.sonic.events import INPUT_SAMPLE_RATE

__all__ = [
    "BEEP_GAP_S",
    "BEEP_S",
    "END_SILENCE_S",
    "EchoBackend",
    "EchoStream",
    "EnergyVad",
    "MAX_BEEPS",
    "MAX_QUOTED_CHARS",
    "MAX_TURN_S",
    "OUT_CHUNK_S",
    "PRE_ROLL_S",
    "START_CHUNKS",
    "beeps",
]

START_CHUNKS: Final = 3  # ~100 ms of speech starts a turn
END_SILENCE_S: Final = 0.6  # this much non-speech ends it
PRE_ROLL_S: Final = 0.3
MAX_TURN_S: Final = 15.0
OUT_CHUNK_S: Final = 0.1
BEEP_S: Final = 0.12
BEEP_GAP_S: Final = 0.08
MAX_BEEPS: Final = 8
MAX_QUOTED_CHARS: Final = 200


class EnergyVad:
    """Speech/non-speech per chunk from level above a tracked noise floor."""

    def __init__(self, margin_db: float = 12.0, absolute_floor_db: float = -50.0) -> None:
        self.floor_db = -70.0
        self.margin_db = margin_db
        self.absolute_floor_db = absolute_floor_db

    def is_speech(self, pcm: np.ndarray) -> bool:
        db = dbfs(pcm)
        speech = db > max(self.floor_db + self.margin_db, self.absolute_floor_db)
        # Track the floor: fall fast to quieter levels, rise slowly (so speech doesn't lift it).
        if db < self.floor_db:
            self.floor_db = 0.7 * self.floor_db + 0.3 * db
        elif not speech:
            self.floor_db += 0.05 * (db - self.floor_db)
        return speech


class EchoStream(InProcessStream):
    def __init__(self) -> None:
        super().__init__()
        self.vad = EnergyVad()
        self._rate = 16000
        self._pre: list[bytes] = []
        self._turn: list[bytes] = []
        self._run = 0  # consecutive speech chunks
        self._silence_s = 0.0
        self._in_turn = False
        self._reply_until = 0.0  # loop time when the last reply finishes playing
        self._reply_audio_id: str | None = None
        self._turns = 0
        self._replying = asyncio.Lock()  # a typed and a spoken reply never interleave

    async def on_audio(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        seconds = samples.size / self._rate
        speech = self.vad.is_speech(samples)
        if not self._in_turn:
            self._pre.append(pcm)
            while (
                len(self._pre) > 1 and sum(len(p) for p in self._pre) > PRE_ROLL_S * self._rate * 2
            ):
                self._pre.pop(0)
            self._run = self._run + 1 if speech else 0
            if self._run >= START_CHUNKS:
                self._in_turn = True
                self._turn = list(self._pre)
                self._pre = []
                self._silence_s = 0.0
                loop = asyncio.get_running_loop()
                if loop.time() < self._reply_until:
                    self._reply_until = 0.0
                    await self.emit_interrupted(self._reply_audio_id)
                    await self.end_completion("INTERRUPTED")
            return
        self._turn.append(pcm)
        self._silence_s = 0.0 if speech else self._silence_s + seconds
        turn_s = sum(len(p) for p in self._turn) / 2 / self._rate
        if self._silence_s >= END_SILENCE_S or turn_s >= MAX_TURN_S:
            self._in_turn = False
            self._run = 0
            audio = b"".join(self._turn)
            self._turn = []
            await self._reply(audio)

    async def on_text(self, role: Role, text: str, interactive: bool) -> None:
        if role == "USER" and interactive and self.audio_started:
            self.spawn(self._text_reply(text))

    async def _text_reply(self, text: str) -> None:
        if asyncio.get_running_loop().time() < self._reply_until:
            self._reply_until = 0.0  # typing while the bot talks interrupts it, like speech
            await self.emit_interrupted(self._reply_audio_id)
            await self.end_completion("INTERRUPTED")
        quoted = text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + " ..."
        async with self._replying:
            await self._answer(f"You typed: {quoted}", beeps(len(text.split()), self.output_rate))

    async def _reply(self, audio16: bytes) -> None:
        self._turns += 1
        samples = np.frombuffer(audio16, dtype=np.int16)
        seconds = samples.size / self._rate
        async with self._replying:
            await self.emit_text("USER", f"(echo turn {self._turns}: {seconds:.1f} s of speech)")
            out = np.frombuffer(resample_pcm16(audio16, self._rate, self.output_rate), np.int16)
            await self._answer("Here is what you said.", out)

    async def _answer(self, text: str, out: np.ndarray) -> None:
        """Nova Sonic's shape of an assistant turn: speculative text, audio, final text."""
        await self.emit_text("ASSISTANT", text, stage="SPECULATIVE")
        cid = await self.begin_audio()
        self._reply_audio_id = cid
        self._reply_until = asyncio.get_running_loop().time() + out.size / self.output_rate
        step = int(OUT_CHUNK_S * self.output_rate)
        for i in range(0, out.size, step):
            await self.emit_audio(cid, out[i : i + step].tobytes())
        await self.end_audio(cid)
        await self.emit_text("ASSISTANT", text, stage="FINAL")
        await self.end_completion()


def beeps(count: int, rate: int) -> np.ndarray:
    """``count`` short 880 Hz beeps (1 to MAX_BEEPS), s16 at ``rate``."""
    t = np.arange(int(BEEP_S * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, BEEP_S - t) / 0.01)  # no clicks
    beep = (6000 * np.sin(2 * math.pi * 880 * t) * fade).astype(np.int16)
    gap = np.zeros(int(BEEP_GAP_S * rate), dtype=np.int16)
    return np.concatenate(
        [part for _ in range(max(1, min(count, MAX_BEEPS))) for part in (beep, gap)]
    )


class EchoBackend:
    name = "echo"
    input_rate = INPUT_SAMPLE_RATE  # its own, whatever --model-input-rate says

    async def open(self) -> BackendStream:
        return EchoStream()

    def credentials_expiration(self) -> datetime | None:
        return None  # no credentials

    async def aclose(self) -> None:
        return None
