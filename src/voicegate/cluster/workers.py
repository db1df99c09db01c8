"""Worker processes of one node: start them, learn where they listen, watch their load, and
restart one that dies (with backoff) without the others noticing.

Each worker is a plain ``voicegate serve`` process (its own interpreter, event loop, calls,
UDP media sockets and model connections) told by ``WORKER_ENV`` that it is worker *i*: it then
listens on a private loopback port and prints that address on stdout, which is how the
supervisor finds it. The configuration reaches workers through ``VOICEGATE_*`` environment
variables, never the command line, so it does not show in ``ps``; the secrets and a per-start
worker key come through the worker's stdin instead (``cluster.handoff``). A worker dies with its
supervisor (``PR_SET_PDEATHSIG``): a node is killed as a whole, never half.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Final

import aiohttp
import structlog

from voicegate.cluster.handoff import SECRET_OPTIONS, new_worker_key, send_line
from voicegate.cluster.proxy import WORKER_KEY
from voicegate.config import OPTIONS, ServeConfig, env_name
from voicegate.config_options import parse_port_range

__all__ = ["WORKER_ENV", "Worker", "WorkerPool", "worker_env"]

log = structlog.get_logger(__name__)

WORKER_ENV: Final = "VOICEGATE_WORKER_INDEX"
"""Internal: set by the supervisor on the processes it starts (not an option)."""
START_TIMEOUT: Final = 120.0
"""A worker must be listening this soon after its start (the local brain loads its models)."""
POLL_INTERVAL: Final = 0.5
BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds before restarting a worker that died, by consecutive failures."""
HEALTHY_AFTER: Final = 30.0
"""A worker that ran this long starts its backoff from the beginning again."""
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def worker_env(config: ServeConfig, index: int, count: int) -> dict[str, str]:
    """The environment of worker ``index`` of ``count``: the node's whole configuration, with
    what is per worker (its share of the media ports and of the call limit) changed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGATE_")}
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values["workers"] = "1"
    values["max_sessions"] = max(1, math.ceil(config.max_sessions / count))
    if config.max_pending_offers:
        values["max_pending_offers"] = max(1, math.ceil(config.max_pending_offers / count))
    # The supervisor applies the per-address limits: a worker sees every request from loopback.
    values["offer_rate"] = 0.0
    values["max_connections_per_ip"] = 0
    values["metrics_port"] = 0
    # The secrets are already read: the files would make a worker see both and refuse to start.
    values["auth_secret_file"] = ""
    values["turn_secret_file"] = ""
    values["metrics_token_file"] = ""
    ports = parse_port_range(config.rtc_ports)
    if ports is not None:
        size = (ports[1] - ports[0] + 1) // count
        low = ports[0] + index * size
        values["rtc_ports"] = f"{low}-{low + size - 1}"
    for opt in OPTIONS:
        if opt.name not in SECRET_OPTIONS:  # those come through stdin: cluster.handoff
            env[env_name(opt)] = _text(values[opt.name])
    env[WORKER_ENV] = str(index)
    return env


async def _hand_over(proc: asyncio.subprocess.Process, line: bytes) -> None:
    """The secrets and the worker key, through the worker's stdin (then closed)."""
    assert proc.stdin is not None
    with contextlib.suppress(OSError):  # a worker that died at once is reported by its exit
        proc.stdin.write(line)
        await proc.stdin.drain()
    proc.stdin.close()


@dataclass(slots=True)
class Worker:
    index: int
    url: str = ""
    proc: asyncio.subprocess.Process | None = None
    alive: bool = False
    ready: bool = False
    draining: bool = False
    sessions: int = 0
    """Live calls: the last poll's count plus the calls answered since that it had not seen."""
    polled_sessions: int = 0
    registered: int = 0
    """The worker's ``calls_registered`` as of the last poll."""
    unseen: list[int] = field(default_factory=list)
    """Registration numbers (``CALL_SEQ_HEADER``) of calls answered after the last poll
    began: the ones above ``registered`` are not in ``polled_sessions`` yet."""
    subjects: dict[str, int] = field(default_factory=dict)
    """Live calls per subject digest (``signaling.subjects``), as of ``polled_at``."""
    polled_at: float = 0.0
    """When the poll that brought ``subjects`` started (monotonic)."""
    pending: int = 0
    """Offers sent to this worker and not answered yet: counted at the moment it is picked,
    so a burst of offers arriving while others negotiate spreads over the workers."""
    max_sessions: int = 0
    lag_ms: float = 0.0
    calls_total: int = 0
    backend: str = ""
    restarts: int = 0
    calls_lost: int = 0
    started_at: float = 0.0
    failures: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def call_answered(self, seq: int | None) -> None:
        """A new call this worker answered (through the supervisor), counted at once and once
        only: a poll that raced the answer may or may not have counted it already; its
        registration number says which. Without one, it counts until the next poll."""
        if seq is None:
            self.sessions += 1
            return
        if seq > self.registered:
            self.unseen.append(seq)
        self._recount()

    def polled(self, sessions: int, registered: int | None) -> None:
        self.polled_sessions = sessions
        if registered is not None:
            self.registered = registered
        self.unseen = [s for s in self.unseen if s > self.registered]
        self._recount()

    def forget_calls(self) -> None:
        """The process is gone, and its calls with it."""
        self.polled_sessions = self.registered = 0
        self.unseen.clear()
        self.sessions = 0

    def _recount(self) -> None:
        self.sessions = self.polled_sessions + len(self.unseen)

    def load(self) -> tuple[int, float]:
        """Sort key for placing a new call: active calls and offers in flight, then event-loop
        lag."""
        return self.sessions + self.pending, self.lag_ms

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.index,
            "alive": self.alive,
            "ready": self.ready,
            "draining": self.draining,
            "sessions": self.sessions,
            "pending": self.pending,
            "loop_lag_ms": round(self.lag_ms, 1),
            "restarts": self.restarts,
            "pid": self.proc.pid if self.proc is not None and self.alive else None,
        }


class StartFailed(Exception):
    """A worker exited before it listened (exit status in ``code``)."""

    def __init__(self, index: int, code: int | None) -> None:
        super().__init__(f"worker {index} exited with status {code} before it listened")
        self.code = code


class WorkerPool:
    """The node's workers. ``on_lost(worker, pc_ids_count)`` is told when a worker died."""

    def __init__(self, config: ServeConfig, count: int) -> None:
        self.config = config
        self.workers = [Worker(i) for i in range(count)]
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._client: aiohttp.ClientSession | None = None
        self.worker_key = new_worker_key()
        """Sent with every request to a worker, which refuses requests without it."""
        self.lost_listeners: list[Callable[[Worker], None]] = []

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self._client is not None
        return self._client

    async def start(self) -> None:
        """Start every worker and wait until all listen; StartFailed if one cannot start."""
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            headers={WORKER_KEY: self.worker_key},
        )
        results = await asyncio.gather(
            *(self._spawn(w) for w in self.workers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                await self.kill_all()
                raise result
        for w in self.workers:
            self._tasks.append(asyncio.create_task(self._watch(w), name=f"worker-{w.index}"))

    async def _spawn(self, w: Worker) -> None:
        count = len(self.workers)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "voicegate",
            "serve",
            env=worker_env(self.config, w.index, count),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor alone
            preexec_fn=_die_with_parent,
        )
        w.proc = proc
        await _hand_over(proc, send_line(self.config, self.worker_key))
        w.exited = asyncio.Event()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    if not line:
                        code = await proc.wait()
                        raise StartFailed(w.index, code)
                    if "listening on" in line:
                        w.url = line.rsplit(" ", 1)[1].strip()
                        break
                    sys.stdout.write(line)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise StartFailed(w.index, None) from None
        w.alive = True
        w.ready = True
        w.draining = False
        w.forget_calls()  # a new process numbers its calls from 0 again
        w.started_at = time.monotonic()
        log.info("worker_started", worker=w.index, pid=proc.pid, url=w.url)
        asyncio.create_task(self._relay(w, proc))  # noqa: RUF006 - ends with the pipe

    async def _relay(self, w: Worker, proc: asyncio.subprocess.Process) -> None:
        """The worker's further stdout, passed on; its end means the worker exited."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            sys.stdout.write(line.decode(errors="replace"))
        await proc.wait()
        w.exited.set()

    async def _watch(self, w: Worker) -> None:
        """Poll the worker's health while it runs; restart it with backoff when it dies."""
        while True:
            while not w.exited.is_set():
                await self._poll(w)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await w.exited.wait()
            code = w.proc.returncode if w.proc is not None else None
            lost = w.sessions
            w.alive = w.ready = False
            w.forget_calls()
            if self.stopping:
                log.info("worker_exited", worker=w.index, code=code)
                return
            w.calls_lost += lost
            log.error("worker_died", worker=w.index, code=code, calls_lost=lost)
            for listener in self.lost_listeners:
                listener(w)
            ran = time.monotonic() - w.started_at
            w.failures = 0 if ran >= HEALTHY_AFTER else w.failures + 1
            await asyncio.sleep(BACKOFF[min(w.failures, len(BACKOFF) - 1)])
            if self._stopped():
                return
            try:
                await self._spawn(w)
                w.restarts += 1
            except StartFailed as exc:
                log.error("worker_restart_failed", worker=w.index, error=str(exc))
                w.started_at = time.monotonic()
                w.exited.set()

    async def _poll(self, w: Worker) -> None:
        started = time.monotonic()
        try:
            async with self.client.get(
                w.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
            return  # a worker too busy to answer keeps its last figures
        if not isinstance(data, dict):
            return
        registered = data.get("calls_registered")
        w.polled(
            int(data.get("sessions", w.polled_sessions)),
            registered if isinstance(registered, int) else None,
        )
        w.max_sessions = int(data.get("max_sessions", w.max_sessions))
        w.lag_ms = float(data.get("loop_lag_ms", w.lag_ms))
        w.calls_total = int(data.get("calls_total", w.calls_total))
        w.backend = str(data.get("backend", w.backend))
        w.draining = bool(data.get("draining", False))
        w.ready = bool(data.get("ready", True)) and not w.draining
        subjects = data.get("subjects")
        if isinstance(subjects, dict):
            w.subjects = {str(k): int(v) for k, v in subjects.items() if isinstance(v, int)}
            w.polled_at = started

    def _stopped(self) -> bool:
        return self.stopping

    def pick(self, exclude: int | None = None) -> Worker | None:
        """The least-loaded ready worker (active calls, then loop lag), or None."""
        ready = [
            w
            for w in self.workers
            if w.alive
            and w.ready
            and w.index != exclude
            and w.sessions + w.pending < max(w.max_sessions, 1)
        ]
        return min(ready, key=Worker.load) if ready else None

    def any_alive(self) -> Worker | None:
        alive = [w for w in self.workers if w.alive]
        return min(alive, key=Worker.load) if alive else None

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    async def wait_all(self) -> None:
        await asyncio.gather(*(w.exited.wait() for w in self.workers if w.proc is not None))

    async def kill_all(self) -> None:
        self.stopping = True
        self.signal_all(signal.SIGKILL)
        for w in self.workers:
            if w.proc is not None:
                await w.proc.wait()

    async def aclose(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
