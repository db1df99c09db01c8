"""Turn latency and word error rate of the embedded offline brain, with real-time input.

Every utterance is spoken by espeak-ng (two voices, alternating), resampled to 16 kHz and fed to
a :class:`~voicegate.backends.local.LocalStream` in 20 ms chunks paced on the monotonic clock,
as a caller's microphone would: 0.5 s of silence, the utterance, 2 s of silence. Each mode
(``--modes``: VAD settings, e.g. speculative decoding off and on) has its own stream, and the
modes take turns utterance by utterance, so they are compared under the same machine load. The
brain's own ``TurnStats.latency_ms`` is the latency (last voiced input frame to first reply
audio chunk);
the transcripts of the turns an utterance produced, joined, are scored against the text spoken
(word error rate: word edit distance over normalised words). ``turns`` counts utterances that
came out as more than one turn (an utterance cut at a pause).

Usage::

    .venv/bin/python -m benchmarks.offline_turn [--modes serial,speculative] \
        [--compare benchmarks/results/offline-turn-before.json]

Writes ``benchmarks/results/offline-turn.json`` (or ``--out``; with the name of the ``--compare``
file, so the block can be rendered again from the results alone) and rewrites the block between
the ``offline-turn`` markers in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import re
import shutil
import statistics
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.harness.provenance import ROOT
from benchmarks.harness.results import RESULTS
from benchmarks.report import offline_turn as report
from benchmarks.report.blocks import BENCH_README, replace_block
from voicegate.audio.resample import resample_pcm16
from voicegate.backends.local import LocalBackend, LocalStream
from voicegate.backends.speech.asr import BEAM_SIZE, SHORT_WINDOWS, Transcriber
from voicegate.backends.speech.models import decode_gate
from voicegate.backends.speech.vad import VadConfig
from voicegate.conversation.tools import default_tools
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
)

RATE = 16000
CHUNK_BYTES = RATE * 20 // 1000 * 2
VOICES = report.VOICES


@dataclasses.dataclass(frozen=True)
class Mode:
    """How the brain decodes: VAD settings, Whisper beam width, short encoder windows or not."""

    vad: VadConfig
    beam: int = BEAM_SIZE
    windows: tuple[tuple[float, int], ...] = SHORT_WINDOWS


MODES: dict[str, Mode] = {
    "serial": Mode(VadConfig(speculate_ms=0)),  # decode once the hangover confirms the end
    "speculative": Mode(VadConfig()),  # decode from ~200 ms into a pause (the default)
    "speculative-400": Mode(VadConfig(hangover_ms=400)),
    # Whisper's full 30 s window for every turn, as before short windows.
    "speculative-30s": Mode(VadConfig(), windows=()),
    # The brain before speculation, beam search and short windows: serial, greedy, 30 s.
    "before": Mode(VadConfig(speculate_ms=0), beam=1, windows=()),
}

UTTERANCES = (
    "Hello.",
    "Hi there, how are you today?",
    "Good morning.",
    "What time is it?",
    "What's the time right now?",
    "Can you tell me the time, please?",
    "The weather is lovely today.",
    "I would like to book a table for two people tomorrow evening.",
    "Where is the nearest train station?",
    "How far is it to the airport from here?",
    "My flight leaves at seven in the morning.",
    "Please remind me to call my mother on Sunday.",
    "Do you know a good place to eat around here?",
    "The meeting has been moved to next Thursday afternoon.",
    "Could you read that back to me one more time?",
    "I think the printer on the second floor is broken again.",
    "Thank you very much for your help.",
    "Is it going to rain this weekend?",
    "We need more coffee, milk and bread from the shop.",
    "Okay, goodbye.",
    "Hello. I have a question about my order.",
    "Turn off the lights in the kitchen, please.",
    "How many days are there until the end of the month?",
    "This sentence is a little longer than the others, because it keeps going for a while.",
)


def espeak(text: str, voice: str) -> bytes:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed (apt-get install espeak-ng)")
    proc = subprocess.run(
        [exe, "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=30
    )
    with wave.open(io.BytesIO(proc.stdout)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    return resample_pcm16(pcm, rate, RATE)


def words(text: str) -> list[str]:
    """Lower case, punctuation dropped, apostrophes kept inside words ("what's")."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference word count)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


async def answer_tools(stream: LocalStream) -> None:
    """Consume the brain's events; answer its clock tool calls at once."""
    tools = default_tools()
    async for event in stream.events():
        if isinstance(event, ToolUse):
            result, _ok = await tools.run(event.tool_name, event.content)
            cid = f"r-{event.tool_use_id}"
            await stream.send(ToolResultContentStart("p", cid, event.tool_use_id))
            await stream.send(ToolResult("p", cid, result))
            await stream.send(ContentEnd("p", cid))


async def feed_real_time(stream: LocalStream, pcm: bytes) -> None:
    """20 ms chunks, each sent at its own deadline (as the microphone delivers them)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
        delay = start + n * 0.020 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await stream.send(AudioInput("p", "mic", pcm[offset : offset + CHUNK_BYTES]))


async def open_stream(mode: Mode) -> tuple[LocalStream, asyncio.Task[None]]:
    config = mode.vad
    backend = LocalBackend(vad_config=config)
    models = await backend.warm()
    if (mode.beam, mode.windows) == (models.asr.beam_size, models.asr.windows):
        stream = await backend.open()
    else:
        # Its own copy of the Whisper weights decoding this way; same VAD, TTS and gate.
        asr = await asyncio.to_thread(
            Transcriber, models.asr.directory, beam_size=mode.beam, windows=mode.windows
        )
        stream = LocalStream(
            dataclasses.replace(models, asr=asr),
            decode_gate(backend.decode_limit),
            vad_config=config,
        )
    for event in (
        SessionStart(),
        PromptStart("p", tools=default_tools().specs()),
        TextContentStart("p", "sys", "SYSTEM"),
        TextInput("p", "sys", "You are a helpful assistant."),
        ContentEnd("p", "sys"),
        AudioContentStart("p", "mic"),
    ):
        await stream.send(event)
    return stream, asyncio.create_task(answer_tools(stream))


async def utterance(stream: LocalStream, text: str, voice: str) -> dict[str, Any]:
    silence = bytes(2 * RATE // 2)
    before = len(stream.stats)
    segments = stream.segments
    await feed_real_time(stream, silence + espeak(text, voice) + silence * 4)
    await stream.idle()
    # Stats are appended once a turn's transcript is known; a turn merged into the next one
    # (the user went on) never appends.
    turns = list(stream.stats)[before:]
    spoken = [t for t in turns if any(ch.isalnum() for ch in t.transcript)]
    heard = " ".join(t.transcript for t in spoken)
    errors, count = word_errors(text, heard)
    # Let the reply finish playing at the "browser", so the next utterance is a new turn and
    # not a barge-in (the brain judges playback from wall time).
    await asyncio.sleep(max(0.0, sum(t.audio_seconds for t in turns) - 0.8))
    latencies = [t.latency_ms for t in spoken if t.latency_ms is not None]
    return {
        "text": text,
        "voice": voice,
        "heard": heard,
        "errors": errors,
        "words": count,
        "turns": len(spoken),
        "segments": stream.segments - segments,
        "latency_ms": round(latencies[-1], 1) if latencies else None,
        "asr_ms": round(spoken[-1].asr_ms, 1) if spoken else None,
        "speculative": bool(spoken) and spoken[-1].speculative,
    }


def summarise(rows: list[dict[str, Any]], stream: LocalStream) -> dict[str, Any]:
    lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    spec = stream.speculation
    return {
        "n": len(rows),
        "latency_ms": {
            "n": len(lat),
            "median": round(statistics.median(lat), 1) if lat else None,
            "min": min(lat, default=None),
            "max": max(lat, default=None),
        },
        "wer_percent": round(
            100 * sum(r["errors"] for r in rows) / max(1, sum(r["words"] for r in rows)), 2
        ),
        "split_utterances": sum(1 for r in rows if r["turns"] != 1),
        "speculation": {
            "started": spec.started,
            "used": spec.used,
            "discarded": spec.discarded,
            "skipped": spec.skipped,
        },
        "utterances": rows,
    }


async def run(modes: list[str], repeats: int) -> dict[str, Any]:
    streams = {mode: await open_stream(MODES[mode]) for mode in modes}
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for rep in range(repeats):
        for n, text in enumerate(UTTERANCES):
            voice = VOICES[(n + rep) % len(VOICES)]
            for mode in modes:
                row = await utterance(streams[mode][0], text, voice)
                rows[mode].append(row)
                print(mode, json.dumps(row), flush=True)
    results = {}
    for mode, (stream, consumer) in streams.items():
        for event in (ContentEnd("p", "mic"), PromptEnd("p"), SessionEnd()):
            await stream.send(event)
        await consumer
        await stream.close()
        results[mode] = summarise(rows[mode], stream)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--modes", default="serial,speculative", help=", ".join(MODES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "offline-turn.json")
    parser.add_argument("--compare", type=Path, help="an earlier results file to show beside")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    meta = provenance.start()
    started = time.monotonic()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    modes_result = asyncio.run(run(modes, args.repeats))
    result = {
        "meta": provenance.finish(meta),
        "label": args.label,
        "compare": args.compare.name if args.compare else None,
        "seconds": round(time.monotonic() - started, 1),
        "modes": modes_result,
    }
    results.write(args.out, result)
    compare = results.load(args.compare) if args.compare else None
    if not args.no_readme:
        raw = args.out.resolve().relative_to(ROOT / "benchmarks")
        text = report.block(result, compare, str(raw))
        replace_block(BENCH_README, report.NAME, text, heading=report.HEADING)
    print("\n".join(report.summary_lines(result)))


__all__ = ["MODES", "UTTERANCES", "Mode", "main", "run", "word_errors", "words"]
