"""Where the Bedrock hop's CPU goes: py-spy samples of the client while N calls run, by step.

The same worker as ``bedrock_cpu.py`` (real ``BedrockBackend`` calls to a stand-in ``echo``
brain in its own process, audio paced in real time) runs under ``py-spy record``; every sample's
stack is given to the first step, in this order, that one of its frames belongs to:

* SigV4 event signing: aws-sdk-signers, voicegate's ``event_signer``;
* voicegate encode / decode: ``sonic.codec`` (Nova JSON and base64 of audio), the stream's
  ``_encode``/``_decode``;
* TLS: the ``ssl`` module; h2 framing: ``h2``, ``hpack`` and voicegate's HTTP/2 transport;
* SDK publish / SDK receive: smithy's event-stream publisher and receiver (JSON wrap, base64,
  framing, the shape (de)serializers);
* the rest (event loop, voicegate's conversation and pacing, the benchmark's own callers).

Percentages are of all samples of the worker's threads while it ran; they do not depend on the
machine's speed as much as CPU seconds do, so a profile taken on a shared machine still shows
where the work is. The result goes to ``benchmarks/results/hop_profile.json`` with the
provenance header, or to ``--out``.

Usage::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.hop_profile [--calls 20] [--seconds 15]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.harness.standin import cli_standin

ROOT = Path(__file__).resolve().parents[2]
OUT = "hop_profile.json"

STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SigV4 event signing", ("aws_sdk_signers/", "event_signer.py")),
    ("voicegate encode", ("BedrockStream._encode", "encode_input", "audio_input_payload")),
    ("voicegate decode", ("BedrockStream._decode", "decode_output")),
    ("TLS", ("ssl.py:", "sslproto.py:")),
    ("h2 framing", ("h2/", "hpack/", "bedrock/http2/", "bedrock/transport.py")),
    ("SDK publish", ("AWSEventPublisher.send",)),
    ("SDK receive", ("AWSEventReceiver.receive",)),
)


def classify(stack: str) -> str:
    """The step a collapsed py-spy stack (frames joined by ';', outermost first) belongs to."""
    for name, needles in STEPS:
        if any(n in stack for n in needles):
            return name
    return "the rest"


def _frames(line: str) -> tuple[str, int]:
    stack, _, count = line.rpartition(" ")
    # py-spy's raw frames read "function (file:line)": keep "file:function" for matching.
    parts = []
    for frame in stack.split(";"):
        func, _, where = frame.partition(" (")
        path = where.rstrip(")").rsplit(":", 1)[0]
        parts.append(f"{path}:{func}")
    return ";".join(parts), int(count)


def profile(
    calls: int,
    seconds: float,
    chunk_ms: int,
    rate: int,
    src: Path = ROOT / "src",
    keep_raw: Path | None = None,
) -> dict[str, Any]:
    """Percent of samples per step; ``src`` is the voicegate tree profiled (another checkout's
    ``src`` gives the "before" of a change with the same benchmark code)."""
    with tempfile.TemporaryDirectory() as name:
        workdir = Path(name)
        raw = workdir / "profile.txt"
        with cli_standin(workdir, ("--brain", "echo")) as standin:
            env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"} | standin
            env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
            worker = [sys.executable, "-m", "benchmarks.bedrock_cpu", "--worker"]
            worker += ["--transport", "asyncio", "--calls", str(calls)]
            worker += ["--seconds", str(seconds), "--chunk-ms", str(chunk_ms)]
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", str(rate)]
            spy += ["-f", "raw", "-o", str(raw), "--nonblocking", "--", *worker]
            subprocess.run(spy, env=env, cwd=ROOT, capture_output=True, timeout=900, check=True)
        if keep_raw is not None:
            keep_raw.write_text(raw.read_text())
        steps: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            if line.strip():
                stack, count = _frames(line)
                steps[classify(stack)] += count
    total = sum(steps.values())
    return {
        "samples": total,
        "percent": {
            name: round(100 * steps[name] / total, 1) for name in [*dict(STEPS), "the rest"]
        },
    }


def _commit_of(src: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(src), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--chunk-ms", type=int, default=20)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="voicegate tree profiled")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("--out", help="results file (default benchmarks/results/hop_profile.json)")
    args = parser.parse_args()
    meta = provenance.start()
    result = profile(args.calls, args.seconds, args.chunk_ms, args.rate, args.src, args.raw)
    for name, pct in result["percent"].items():
        print(f"{name:24s} {pct:5.1f} %")
    doc = {
        "meta": provenance.finish(meta)
        | {
            "calls": args.calls,
            "seconds": args.seconds,
            "chunk_ms": args.chunk_ms,
            # The code profiled (with --src it is another checkout's, not this one's).
            "profiled_commit": _commit_of(args.src),
        },
        **result,
    }
    results.write(Path(args.out) if args.out else results.RESULTS / OUT, doc)


__all__ = ["STEPS", "classify", "main", "profile"]
