"""The offline brain's three models, loaded once per process, and the gate on ASR decodes.

Loading takes ~1-2 s and a few hundred MB, so every call of a process shares one set (and a
worker process of a node loads its own). A Whisper decode uses both cores for ~300 ms: decodes
run in worker threads behind one process-wide semaphore, released only when the thread is done.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from voicegate.backends.speech.asr import Transcriber
from voicegate.backends.speech.tts import Synthesizer
from voicegate.backends.speech.vad import SileroModel

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SpeechModels:
    vad: SileroModel
    asr: Transcriber
    tts: Synthesizer
    load_seconds: float
    rss_after_load_mb: float


_models: SpeechModels | None = None
_models_lock = threading.Lock()


def load_models() -> SpeechModels:
    """Load (once per process) and warm the three models. Blocking: ~1-2 s the first time."""
    global _models
    with _models_lock:
        if _models is not None:
            return _models
        started = time.perf_counter()
        vad = SileroModel()
        asr = Transcriber()
        tts = Synthesizer()
        asr.warm_up()
        tts.warm_up()
        seconds = time.perf_counter() - started
        resident = rss_mb()
        _models = SpeechModels(vad, asr, tts, seconds, resident)
        log.info("local_models_loaded", seconds=round(seconds, 2), rss_mb=round(resident))
        return _models


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def decode_gate(limit: int) -> asyncio.Semaphore:
    """The process-wide bound on concurrent ASR decodes (one semaphore per event loop)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(limit)
    return gate


async def run_gated[T](gate: asyncio.Semaphore, func: Callable[..., T], *args: Any) -> T:
    """Run ``func`` in a worker thread under ``gate``.

    The gate is released when the *thread* finishes, not when the caller is cancelled: a barge-in
    cancels the turn at once, but the decode keeps its cores until it is really done, so decodes
    never pile up beyond the limit.
    """
    await gate.acquire()
    try:
        work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    except BaseException:
        gate.release()
        raise

    def done(fut: asyncio.Future[T]) -> None:
        gate.release()
        if not fut.cancelled():
            fut.exception()  # retrieved, so an abandoned failure is not logged as unhandled

    work.add_done_callback(done)
    return await asyncio.shield(work)


def rss_mb() -> float:
    """Resident memory now (Linux), else the peak: the figure the README quotes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


__all__ = ["SpeechModels", "available_cpus", "decode_gate", "load_models", "rss_mb", "run_gated"]
