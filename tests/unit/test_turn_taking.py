"""The turns brain's endpointing judges 10 ms frames, so the chunk length the client sends
(``--model-chunk-ms``) changes only when the end of a turn can be seen (the chunk holding it
must have arrived), not where the turn ends or what is played back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicegate.standin.scripted_turns import TurnTaking

RATE = 16000
SPEECH_S, SILENCE_S, END_S = 0.5, 1.0, 0.3


def _pcm() -> bytes:
    t = np.arange(round(RATE * SPEECH_S)) / RATE
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return tone.tobytes() + bytes(round(RATE * SILENCE_S) * 2)


@pytest.mark.parametrize("chunk_ms", [20, 32, 40])
async def test_a_turn_ends_and_is_played_back_alike_whatever_the_chunk_length(
    chunk_ms: int,
) -> None:
    rules = TurnTaking(END_S, think_s=0.0, in_rate=RATE)
    turn = asyncio.ensure_future(rules.next_turn())
    pcm, step = _pcm(), RATE * chunk_ms // 1000 * 2
    seen_at = None
    for offset in range(0, len(pcm), step):
        rules.hear(pcm[offset : offset + step])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if turn.done():
            seen_at = (offset + step) / 2 / RATE
            break
    assert seen_at is not None, "the turn never ended"
    # Seen in the chunk that holds the end of the quiet, not a chunk later.
    assert SPEECH_S + END_S <= seen_at < SPEECH_S + END_S + chunk_ms / 1000
    # The speech played back is the speech, to the frame: no chunk's worth of silence.
    assert turn.result().seconds == pytest.approx(SPEECH_S, abs=0.010)
