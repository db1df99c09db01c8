"""The ``offline-turn`` block of benchmarks/README.md (``python -m benchmarks.offline_turn``):
one row per mode of a run, an earlier run's rows above when compared."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.provenance import read

NAME = "offline-turn"
HEADING = "Offline brain turn"
VOICES = ("en-us", "en-us+m3")
"""The espeak-ng voices the utterances are spoken in, alternating."""


def summary_lines(result: dict[str, Any]) -> list[str]:
    run = read(result)
    commit = f"`{run.commit[:10]}`{'+dirty' if run.dirty else ''}"
    load = " / ".join(str(x) for x in run.load_before or [])
    lines = []
    for mode, m in result["modes"].items():
        lat, spec = m["latency_ms"], m["speculation"]
        lines.append(
            f"| {result['label']}: {mode} | {commit} | {m['n']} | {lat['median']} "
            f"| {lat['min']}-{lat['max']} | {m['wer_percent']} | {m['split_utterances']} "
            f"| {spec['used']}/{spec['started']} | {load} |"
        )
    return lines


def block(result: dict[str, Any], compare: dict[str, Any] | None, raw: str) -> str:
    """``raw``: the results file's path as the block names it (``results/offline-turn.json``)."""
    rows = [r for r in (compare, result) if r is not None]
    return "\n".join(
        [
            f"Offline brain turn (`offline_turn.py`; raw: `{raw}`), "
            f"{read(result).hardware}, real-time input, espeak-ng voices "
            f"{', '.join(VOICES)}, modes interleaved utterance by utterance. Latency: last voiced "
            "input frame to first reply audio chunk. Split: utterances heard as more than one "
            "turn. Guesses: speculative decodes kept / started. Modes: VAD settings and Whisper "
            "beam width and encoder window (`before`: serial, greedy, Whisper's full 30 s window; "
            "`*-30s`: the full window for every turn). Load average "
            "(1 / 5 / 15 min) before the run beside each row.",
            "",
            "| run | commit | N | latency median ms | min-max ms | WER % | split | guesses kept "
            "| load before |",
            "|---|---|---|---|---|---|---|---|---|",
            *(line for r in rows for line in summary_lines(r)),
        ]
    )


__all__ = ["HEADING", "NAME", "VOICES", "block", "summary_lines"]
