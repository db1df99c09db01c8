"""A turn-taking brain with a fixed think time, for voice-to-voice latency measurements.

It answers the way a speech model answers, not the way an echo does: once per user turn, after
the turn ends, with a finite reply. A turn starts with the first voiced 10 ms frame (RMS at or
above ``SPEECH_RMS``) and ends after ``end_silence_s`` of quiet, counted in audio time (samples
received), like a model's endpointing; ``think_s`` later the brain answers with the user's own
speech played back once (from its first voiced frame to its last, at the output rate), written
out as fast as the stream takes it, as a model's audio arrives. Like Nova Sonic it first sends a
final USER transcript for the turn, so a gateway knows the turn was heard (and does not replay
its audio to a renewed stream), then the assistant's speculative text, audio and final text.

The brain's think time, seen from the caller, is therefore ``end_silence_s + think_s``: time
from the caller's end of speech to the first answer audio at the caller, minus that, is the
gateway's own cost (both directions of its media path, its model hop and its pacing).

Used by the benchmarks' stand-in (benchmarks/systems/standin_proc.py ``--brain turns``), the
stock benchmark gateway (benchmarks/systems/stock_gateway.py ``--brain turns``, through
TurnTaking, the rules without the events) and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

from voicegate.audio.chunks import Chunker
from voicegate.audio.levels import rms
from voicegate.audio.resample import resample_pcm16
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic.events import AudioContentStart, InputEvent
from voicegate.standin.reply_audio import split_chunks

__all__ = [
    "END_SILENCE_S",
    "FRAME_S",
    "HeardTurn",
    "MAX_PENDING_TURNS",
    "MAX_TURN_S",
    "SPEECH_RMS",
    "THINK_S",
    "TurnTaking",
    "TurnsBrain",
    "TurnsFactory",
]

SPEECH_RMS: Final = 300.0
"""RMS (16-bit scale, about -40 dBFS) at or above which a frame is speech."""
FRAME_S: Final = 0.010
"""What the rules judge, whatever the length of the chunks the client sends: a model's
endpointing does not wait for a client's chunk boundaries, and a rule judging whole chunks
would make a longer ``--model-chunk-ms`` look slower than it is (a chunk with the last few
milliseconds of speech in it counted as speech, the end of the quiet found only at a chunk's
end, the reply starting with a chunk's worth of the silence before the speech)."""
END_SILENCE_S: Final = 0.3
THINK_S: Final = 0.2
MAX_TURN_S: Final = 10.0
"""A turn longer than this is answered anyway (and its reply capped to it)."""
MAX_PENDING_TURNS: Final = 4


@dataclass(frozen=True, slots=True)
class HeardTurn:
    """One user turn, heard and thought about: its number (from 1) and its speech, from the
    first voiced chunk to the last, at the rate it came in."""

    number: int
    speech: bytes
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.speech) / 2 / self.rate

    def reply(self, out_rate: int) -> bytes:
        """The answer's audio: the turn played back once, at ``out_rate``."""
        return resample_pcm16(self.speech, self.rate, out_rate)


class TurnTaking:
    """The turns brain's rules on plain 16-bit mono PCM, with no model stream around them:
    endpointing in audio time (``hear``), a bounded queue of turns waiting for an answer, and
    the think time (``next_turn``).

    A class of its own so that every system the turns benchmark compares answers on the very
    same schedule: the stand-in's TurnsBrain wraps it in Nova Sonic's events, and the stock
    benchmark gateway (benchmarks/systems/stock_gateway.py ``--brain turns``), which has no
    model hop, runs it in its own process on the audio it receives."""

    def __init__(
        self, end_silence_s: float = END_SILENCE_S, think_s: float = THINK_S, in_rate: int = 16000
    ) -> None:
        self.end_silence_s = end_silence_s
        self.think_s = think_s
        self.in_rate = in_rate
        self.turns = 0
        """Turns answered so far (counted when the think time is over)."""
        self._turn: list[bytes] = []
        self._voiced_len = 0  # frames of the turn up to and including its last voiced one
        self._quiet_s = 0.0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_PENDING_TURNS)
        self._frames: Chunker | None = None

    @property
    def think_ms(self) -> float:
        """What the caller sees of these rules: endpointing plus thinking."""
        return (self.end_silence_s + self.think_s) * 1000

    def hear(self, pcm: bytes) -> None:
        """One chunk of the user's audio at ``in_rate``, judged in ``FRAME_S`` frames (a
        partial frame waits for the next chunk); a turn that it ends is queued."""
        frame = round(self.in_rate * FRAME_S)
        if self._frames is None or self._frames.samples != frame:
            self._frames = Chunker(frame)
        for part in self._frames.push(pcm):
            self._hear_frame(part)

    def _hear_frame(self, pcm: bytes) -> None:
        voiced = rms(pcm) >= SPEECH_RMS
        if not self._turn:
            if voiced:
                self._turn, self._voiced_len, self._quiet_s = [pcm], 1, 0.0
            return
        self._turn.append(pcm)
        if voiced:
            self._voiced_len, self._quiet_s = len(self._turn), 0.0
        else:
            self._quiet_s += len(pcm) / 2 / self.in_rate
        turn_s = len(self._turn) * len(pcm) / 2 / self.in_rate  # frames are all one length
        if self._quiet_s >= self.end_silence_s or turn_s >= MAX_TURN_S:
            speech = b"".join(self._turn[: self._voiced_len])
            self._turn = []
            # A user who talks faster than the brain answers loses turns, like a busy model.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(speech)

    async def next_turn(self) -> HeardTurn:
        """The next ended turn, ``think_s`` after it was taken from the queue."""
        speech = await self._queue.get()
        await asyncio.sleep(self.think_s)
        self.turns += 1
        return HeardTurn(self.turns, speech, self.in_rate)


class TurnsBrain(InProcessStream):
    """Answers each user turn once, ``end_silence_s + think_s`` after it ends, with the turn
    played back (the rules: TurnTaking)."""

    def __init__(self, end_silence_s: float = END_SILENCE_S, think_s: float = THINK_S) -> None:
        super().__init__()
        self.rules = TurnTaking(end_silence_s, think_s)

    @property
    def end_silence_s(self) -> float:
        return self.rules.end_silence_s

    @property
    def think_s(self) -> float:
        return self.rules.think_s

    @property
    def turns(self) -> int:
        return self.rules.turns

    @property
    def think_ms(self) -> float:
        """What the caller sees of this brain: endpointing plus thinking."""
        return self.rules.think_ms

    async def send(self, event: InputEvent) -> None:
        if isinstance(event, AudioContentStart):
            self.rules.in_rate = event.sample_rate
        await super().send(event)

    async def on_audio_start(self) -> None:
        self.spawn(self._answer_turns())

    async def on_audio(self, pcm: bytes) -> None:
        self.rules.hear(pcm)

    async def _answer_turns(self) -> None:
        while True:
            turn = await self.rules.next_turn()
            n = turn.number
            await self.emit_text("USER", f"(turn {n}: {turn.seconds:.2f} s of speech)")
            text = f"Turn {n}, played back."
            await self.emit_text("ASSISTANT", text, stage="SPECULATIVE", stop_reason="PARTIAL_TURN")
            reply = turn.reply(self.output_rate)
            cid = await self.begin_audio()
            for chunk in split_chunks(reply, self.output_rate):
                await self.emit_audio(cid, chunk)
            await self.end_audio(cid)
            await self.emit_text("ASSISTANT", text, stage="FINAL")
            await self.end_completion()


class TurnsFactory:
    """Opens one TurnsBrain per stream (the stand-in's factory interface)."""

    name = "turns"

    def __init__(self, end_silence_s: float = END_SILENCE_S, think_s: float = THINK_S) -> None:
        self.end_silence_s = end_silence_s
        self.think_s = think_s

    @property
    def think_ms(self) -> float:
        return (self.end_silence_s + self.think_s) * 1000

    async def open(self) -> InProcessStream:
        return TurnsBrain(self.end_silence_s, self.think_s)

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
