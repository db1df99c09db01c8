"""The Bedrock stand-in for benchmarks, in its own process: the ``echo`` brain (zero think time)
that also notes when each marker tone reaches it, for one-way latencies.

    python -m benchmarks.standin_proc --cert-dir DIR --marks FILE

Prints one ``STANDIN {json}`` line (endpoint, CA file, keys) once listening; runs until its
standard input closes, then writes the marker arrival times (``time.monotonic()``, the same clock
as every other process's event loop) to FILE as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.markers import Detector
from voicegate.standin.brains import EchoBrain
from voicegate.standin.server import StandIn

MARKS: list[float] = []


class MarkerEcho(EchoBrain):
    def __init__(self) -> None:
        super().__init__()
        self._detector = Detector(16000, on_marker=MARKS)

    async def on_audio(self, pcm: bytes) -> None:
        self._detector.push(np.frombuffer(pcm, dtype=np.int16), time.monotonic())
        await super().on_audio(pcm)


class MarkerEchoFactory:
    name = "echo"

    async def open(self) -> MarkerEcho:
        return MarkerEcho()

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def main(cert_dir: Path, marks: Path) -> None:
    async with StandIn(
        "echo", cert_dir=cert_dir, factory=MarkerEchoFactory(), max_sessions=512
    ) as s:
        print("STANDIN " + json.dumps(s.client_env()), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.to_thread(marks.write_text, json.dumps(MARKS))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--marks", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.cert_dir, args.marks))
