"""Opt-in call recording: the user's and the bot's audio as two WAV files plus a transcript.

Off unless the operator configures a destination (``--record-dir`` and/or ``--record-s3-bucket``)
*and* the call asks for it (``"record": true`` in its offer): the page that sets that flag is where
the user is told and agrees. See docs/observability.md for the consent note.

Why the shape below: recording must never slow a call down or stall it. The event loop only
appends to a queue (no I/O, no locks held for long); one writer thread turns the queue into files;
one uploader thread sends finished calls to S3 with multipart uploads, retried with backoff. The
queue is bounded: when the writer falls behind, chunks are dropped and *counted* per stream (the
gap becomes silence, so both files keep the call's timeline), and the counts go into the call's
``call.json`` and the metrics. Each stream is placed on the call's clock (sample positions from
the moment the call's recording started), so ``user.wav`` and ``bot.wav`` line up sample for
sample in time and can be mixed into one stereo file by any tool.

Files per call (``<call id>/`` under the directory, or under ``<prefix><call id>/`` in S3):
``user.wav`` (16 kHz mono, what the model heard), ``bot.wav`` (24 kHz mono, what was sent to the
browser, silence included), ``transcript.jsonl`` (one JSON object per final transcript, tool call
or interruption, with ``t`` in seconds from the start), ``call.json`` (timings and drop counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from voicegate.call.events import BotAudio, CallClosing, CallEnded, CallEvent, UserAudio
from voicegate.conversation import (
    BotInterrupted,
    BotText,
    ToolCallFinished,
    UserTranscript,
)
from voicegate.observability.callfiles import (
    BOT_RATE,
    USER_RATE,
    CallFiles,
    close_files,
    open_call_files,
    private_file,
    write_audio,
)
from voicegate.observability.metrics import GatewayMetrics
from voicegate.observability.upload import default_s3_client as _default_s3_client
from voicegate.observability.upload import upload_with_retries

__all__ = [
    "CLOSE_TIMEOUT",
    "CallRecording",
    "FILES",
    "MAX_QUEUED",
    "Recorder",
    "RecordingOptions",
    "RecordingResult",
    "UPLOAD_ATTEMPTS",
    "UPLOAD_BACKOFF",
]

log = structlog.get_logger(__name__)

MAX_QUEUED: Final = 4096
"""Data items waiting for the writer (about 80 s of one call's audio); beyond, chunks drop."""
UPLOAD_ATTEMPTS: Final = 4
UPLOAD_BACKOFF: Final = 0.5
CLOSE_TIMEOUT: Final = 30.0
"""Seconds ``Recorder.aclose`` waits for pending writes and uploads at shutdown."""
FILES: Final = ("user.wav", "bot.wav", "transcript.jsonl", "call.json")


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    directory: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.directory or self.s3_bucket)

    def location(self, call_id: str) -> str | None:
        """Where a recorded call's files end up (S3 when configured, else the directory)."""
        if self.s3_bucket:
            return f"s3://{self.s3_bucket}/{self.s3_prefix}{call_id}/"
        if self.directory:
            return str(Path(self.directory) / call_id) + "/"
        return None


@dataclass(slots=True)
class _Open:
    call: CallRecording


@dataclass(slots=True)
class _Audio:
    call: CallRecording
    stream: str
    position: int  # samples from the call's start
    pcm: bytes


@dataclass(slots=True)
class _Line:
    call: CallRecording
    record: dict[str, Any]


@dataclass(slots=True)
class _Close:
    call: CallRecording


_Item = _Open | _Audio | _Line | _Close | None


@dataclass(slots=True)
class RecordingResult:
    """What became of one call's recording (set when ``CallRecording.finished`` is)."""

    directory: Path | None = None
    s3_keys: list[str] = field(default_factory=list)
    upload_error: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    write_error: str = ""


class CallRecording:
    """One call's recording, fed from the event loop. Every method returns at once.

    It is a ``CallObserver`` of its call (signaling registers it when the call asked to be
    recorded): the call's audio both ways, its final transcripts, tool results and barge-ins
    become the files; ``CallClosing`` closes them."""

    wants_audio = True  # CallObserver: UserAudio and BotAudio, every frame

    def __init__(self, recorder: Recorder, call_id: str, clock: Callable[[], float]) -> None:
        self.call_id = call_id
        self._recorder = recorder
        self._clock = clock
        self._t0 = clock()
        self.started_wall = time.time()
        self._positions: dict[str, int] = {}
        self.dropped: dict[str, int] = {"user": 0, "bot": 0, "transcript": 0}
        self.closed = False
        self.finished = threading.Event()
        self.result = RecordingResult()

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        match event:
            case UserAudio():
                self.user(event.pcm)
            case BotAudio():
                self.bot(event.pcm)
            case UserTranscript(final=True):
                self.line("user", text=event.text)
            case BotText(final=True):
                self.line("assistant", text=event.text)
            case BotInterrupted():
                self.line("interrupted", dropped_ms=event.dropped_samples / 24)
            case ToolCallFinished():
                self.line("tool", name=event.name, ok=event.ok, result=event.result)
            case CallClosing() | CallEnded():
                self.close()
            case _:
                pass

    def user(self, pcm: bytes) -> None:
        """16 kHz mono s16 as the model receives it."""
        self._audio("user", USER_RATE, pcm)

    def bot(self, pcm: bytes) -> None:
        """24 kHz mono s16 as it leaves for the browser, one paced frame at a time."""
        self._audio("bot", BOT_RATE, pcm)

    def line(self, kind: str, **fields: Any) -> None:
        """One transcript line: a final transcript, a tool call, an interruption."""
        if self.closed:
            return
        record = {"t": round(self.elapsed(), 3), "type": kind, **fields}
        if not self._recorder._offer(_Line(self, record)):
            self._drop("transcript")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._recorder._control(_Close(self))

    def _audio(self, stream: str, rate: int, pcm: bytes) -> None:
        if self.closed or not pcm:
            return
        position = self._positions.get(stream)
        if position is None:
            position = max(0, round(self.elapsed() * rate))
        self._positions[stream] = position + len(pcm) // 2
        if not self._recorder._offer(_Audio(self, stream, position, pcm)):
            self._drop(stream)

    def _drop(self, stream: str) -> None:
        self.dropped[stream] += 1
        if self.dropped[stream] == 1:
            log.warning("recording_dropping", pc_id=self.call_id, stream=stream)
        metrics = self._recorder.metrics
        if metrics is not None:
            metrics.recording_dropped.inc(stream=stream)


class Recorder:
    """The recording service of one server: a writer thread and, for S3, an uploader thread,
    both started on the first recorded call and stopped by ``aclose``."""

    def __init__(
        self,
        options: RecordingOptions,
        metrics: GatewayMetrics | None = None,
        s3_client: Callable[[], Any] | None = None,
    ) -> None:
        if not options.enabled:
            raise ValueError("recording needs a directory or an S3 bucket")
        self.options = options
        self.metrics = metrics
        self._s3_client = s3_client or _default_s3_client
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._uploads: queue.Queue[CallRecording | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._uploader: threading.Thread | None = None
        self._staging: Path | None = None
        self._lock = threading.Lock()

    # -- event loop side -----------------------------------------------------------------------

    def start_call(
        self, call_id: str, clock: Callable[[], float] = time.monotonic
    ) -> CallRecording:
        call = CallRecording(self, call_id, clock)
        self._ensure_threads()
        self._control(_Open(call))
        return call

    def _offer(self, item: _Item) -> bool:
        if self._queue.qsize() >= MAX_QUEUED:
            return False
        self._queue.put_nowait(item)
        return True

    def _control(self, item: _Item) -> None:
        # Opening and closing a call are never dropped; there are two per call, so the queue
        # stays bounded by the data limit plus twice the number of concurrent calls.
        self._queue.put_nowait(item)

    def _ensure_threads(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="voicegate-recording-writer", daemon=True
                )
                self._writer.start()
            if self.options.s3_bucket and self._uploader is None:
                self._uploader = threading.Thread(
                    target=self._upload_loop, name="voicegate-recording-upload", daemon=True
                )
                self._uploader.start()

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Finish pending writes and uploads (up to ``timeout``), then stop the threads."""
        writer, uploader = self._writer, self._uploader
        if writer is not None:
            self._queue.put_nowait(None)
        deadline = time.monotonic() + timeout
        if writer is not None:
            await asyncio.to_thread(writer.join, timeout)
        if uploader is not None:
            self._uploads.put_nowait(None)
            await asyncio.to_thread(uploader.join, max(0.1, deadline - time.monotonic()))
        if self._staging is not None and not self.options.directory:
            shutil.rmtree(self._staging, ignore_errors=True)
        self._writer = self._uploader = None

    # -- writer thread ---------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.options.directory:
            return Path(self.options.directory)
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="voicegate-recording-"))
        return self._staging

    def _write_loop(self) -> None:
        files: dict[int, CallFiles] = {}
        while True:
            item = self._queue.get()
            if item is None:
                for open_files in files.values():
                    with contextlib.suppress(Exception):
                        close_files(open_files)
                return
            key = id(item.call)
            try:
                match item:
                    case _Open(call=call):
                        files[key] = self._open_files(call)
                    case _Audio(call=call, stream=stream, position=position, pcm=pcm):
                        if key in files:
                            write_audio(files[key], stream, position, pcm)
                    case _Line(call=call, record=record):
                        if key in files:
                            files[key].transcript.write(json.dumps(record) + "\n")
                    case _Close(call=call):
                        opened = files.pop(key, None)
                        if opened is not None:
                            self._finish_files(call, opened)
                        else:
                            call.finished.set()
            except Exception as exc:  # a full disk must not kill the writer for other calls
                call = item.call
                if not call.result.write_error:
                    call.result.write_error = f"{type(exc).__name__}: {exc}"
                    log.error("recording_write_failed", pc_id=call.call_id, error=str(exc))
                if isinstance(item, _Close):
                    files.pop(key, None)
                    call.finished.set()

    def _open_files(self, call: CallRecording) -> CallFiles:
        return open_call_files(self._root(), call.call_id)

    def _finish_files(self, call: CallRecording, opened: CallFiles) -> None:
        seconds = {
            s: n / (USER_RATE if s == "user" else BOT_RATE) for s, n in opened.written.items()
        }
        close_files(opened)
        meta = {
            "call_id": call.call_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.started_wall)),
            "duration_s": round(call.elapsed(), 3),
            "user": {"file": "user.wav", "rate": USER_RATE, "seconds": round(seconds["user"], 3)},
            "bot": {"file": "bot.wav", "rate": BOT_RATE, "seconds": round(seconds["bot"], 3)},
            "dropped_chunks": dict(call.dropped),
        }
        private_file(opened.directory / "call.json").write_text(json.dumps(meta, indent=1) + "\n")
        call.result.directory = opened.directory
        call.result.dropped = dict(call.dropped)
        if any(call.dropped.values()):
            log.warning("recording_incomplete", pc_id=call.call_id, dropped=call.dropped)
        if self.options.s3_bucket:
            self._uploads.put_nowait(call)
        else:
            call.finished.set()

    # -- uploader thread -------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        client: Any = None
        while True:
            call = self._uploads.get()
            if call is None:
                return
            directory = call.result.directory
            try:
                if directory is None:
                    continue
                if client is None:
                    client = self._s3_client()
                prefix = self.options.s3_prefix + directory.name + "/"
                for name in FILES:
                    path = directory / name
                    if path.is_file():
                        key = prefix + name
                        upload_with_retries(
                            client,
                            path,
                            self.options.s3_bucket,
                            key,
                            UPLOAD_ATTEMPTS,
                            UPLOAD_BACKOFF,
                        )
                        call.result.s3_keys.append(key)
                if self.metrics is not None:
                    self.metrics.recording_uploads.inc(result="ok")
                if not self.options.directory:
                    shutil.rmtree(directory, ignore_errors=True)
                    call.result.directory = None
            except Exception as exc:
                call.result.upload_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "recording_upload_failed",
                    pc_id=call.call_id,
                    error=call.result.upload_error,
                    kept=str(directory),
                )
                if self.metrics is not None:
                    self.metrics.recording_uploads.inc(result="failed")
            finally:
                call.finished.set()
