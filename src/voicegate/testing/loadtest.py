"""``voicegate loadtest URL``: N real callers against a running voicegate, and what they measured.

Each caller is a real aiortc peer (testing/client.py) that sends browser-like Opus and decodes
every packet the moment it arrives (voicegate's media patches, media/patch.py: no receive jitter
buffer, so the caller measures the gateway and not itself). Calls start at ``--ramp`` calls per
second; once every call is up (or has failed) a ``--warmup`` passes, then the measured window of
``--duration`` seconds; calls keep running a little past it so that answers to what was sent
inside the window still count. Works against any gateway that speaks voicegate's signaling
(POST /api/offer, DELETE /api/sessions/{pc_id}), local or remote.

The JSON (``--json FILE``) has a ``summary`` (calls_ok, calls_failed, rtt_ms, turn_ms, fps_min,
connect_ms, ...), one entry per call in ``calls``, and ``meta`` (the options, the window in
``time.monotonic()`` seconds, which other processes on the machine share, and the load average).
The report and the JSON are made by testing/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported when a load test runs, not for every `voicegate` command
    import aiohttp

    from voicegate.testing.workloads import Analyzer, PacketTrack, Signal

__all__ = [
    "Caller",
    "GRACE_S",
    "HANGUP_TIMEOUT_S",
    "LoadOptions",
    "WORKLOADS",
    "add_parser",
    "check_url",
    "main",
    "run",
]

WORKLOADS: Final = ("markers", "turns")
"""What the callers play and measure (testing/workloads.py)."""
GRACE_S = {"markers": 1.0, "turns": 4.5}
"""How long calls run past the window, so that answers to what was sent in it arrive."""
HANGUP_TIMEOUT_S = 5.0


@dataclass
class LoadOptions:
    url: str
    calls: int = 1
    duration: float = 10.0
    ramp: float = 10.0
    """Calls started per second."""
    token: str | None = None
    relay: bool = False
    workload: str = "markers"
    warmup: float = 2.0
    connect_timeout: float = 20.0
    think_ms: float | None = None
    """The brain's think time on the turns workload; given, turn_ms minus it is reported as
    gateway_ms."""
    loss: float = 0.0
    jitter_ms: float = 0.0
    delay_ms: float = 0.0
    seed: int = 5


@dataclass
class Caller:
    index: int
    track: PacketTrack
    analyzer: Analyzer
    client: Any = None  # CallClient, imported lazily with aiortc
    started_at: float = 0.0
    connected_at: float | None = None
    reason: str | None = None
    """Why the call failed (None: it did not)."""
    status: int | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the call is connected or has failed to."""

    @property
    def connect_ms(self) -> float | None:
        if self.connected_at is None:
            return None
        return round((self.connected_at - self.started_at) * 1000, 1)

    def fail(self, reason: str, status: int | None = None) -> None:
        if self.reason is None:
            self.reason = reason
            self.status = status


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a voicegate base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL"
    return None


async def _relay_servers(http: aiohttp.ClientSession, opts: LoadOptions) -> list[Any]:
    """The one TURN URL aiortc can use (it takes only the first TURN URL it is given)."""
    from voicegate.testing.client import CallClient

    entries = await CallClient.fetch_ice_servers(http, opts.url, opts.token)
    for entry in entries:
        urls = entry.get("urls", [])
        for url in [urls] if isinstance(urls, str) else urls:
            if url.startswith("turn:") and "transport=tcp" not in url:
                return CallClient.ice_servers_from_json([{**entry, "urls": url}])
    raise RuntimeError(
        "--relay: the server offers no TURN server (GET /api/ice-servers has no turn: URL; "
        "start it with --turn-url and --turn-secret)"
    )


async def _run_call(
    caller: Caller,
    opts: LoadOptions,
    http: aiohttp.ClientSession,
    ice_servers: list[Any],
    stop: asyncio.Event,
) -> None:
    import aiohttp

    from voicegate.testing.client import CallClient, OfferRefused

    loop = asyncio.get_running_loop()
    client = CallClient(
        opts.url,
        ice_servers=ice_servers,
        relay_only=opts.relay,
        token=opts.token,
        source=caller.track,
        on_frame=caller.analyzer.push,
        keep_audio=False,
    )
    caller.client = client
    caller.started_at = loop.time()
    try:
        async with asyncio.timeout(opts.connect_timeout):
            await client.connect(http)
            await client.wait_connected(opts.connect_timeout)
        caller.connected_at = loop.time()
    except OfferRefused as exc:
        caller.fail(f"{exc.status} {exc.reason}", exc.status)
    except TimeoutError:
        caller.fail(f"no connection within {opts.connect_timeout:g} s")
    except aiohttp.ClientError as exc:
        caller.fail(f"cannot reach {opts.url}: {exc}")
    except Exception as exc:  # anything else a caller meets is a failed call, with its reason
        caller.fail(f"{type(exc).__name__}: {exc}")
    finally:
        caller.settled.set()
    if caller.reason is not None:
        return
    while not stop.is_set():
        if client.connection_error is not None:
            caller.fail(f"{client.connection_error} during the call")
            return
        for msg in client.of_type("error"):
            data = msg.get("data", {})
            if data.get("fatal"):
                caller.fail(f"ended by the server: {data.get('message', '')}")
                return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()


async def _hang_up(caller: Caller, http: aiohttp.ClientSession) -> None:
    client = caller.client
    if client is None:
        return
    if client.pc_id and caller.reason is None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(HANGUP_TIMEOUT_S):
                await client.hangup(http)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(HANGUP_TIMEOUT_S):
            await client.close()


def _prepare_process(opts: LoadOptions) -> None:
    """Process-wide set-up: the decode-on-arrival receive path (idempotent; a gateway in the
    same process applies the same patches) and the link impairment, if any."""
    from voicegate.media import patch as rtcpatch
    from voicegate.testing.impair import impair

    rtcpatch.apply()
    impair(opts.loss, opts.jitter_ms, opts.delay_ms, opts.seed)


async def run(
    opts: LoadOptions, signal: Signal | None = None, progress: TextIO | None = None
) -> dict[str, Any]:
    """Run the load test; returns the JSON document (report.document)."""
    import aiohttp

    from voicegate.testing import report, workloads
    from voicegate.testing.workloads import Analyzer, PacketTrack

    _prepare_process(opts)
    loop = asyncio.get_running_loop()
    load_before = [round(x, 2) for x in os.getloadavg()]
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if signal is None:
        signal = await asyncio.to_thread(workloads.build, opts.workload)
    callers = [
        Caller(i, PacketTrack(signal, workloads.offset_for(signal, i)), Analyzer(opts.workload))
        for i in range(opts.calls)
    ]
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ice_servers = await _relay_servers(http, opts) if opts.relay else []
        begin = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for caller in callers:
            delay = begin + caller.index / opts.ramp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_run_call(caller, opts, http, ice_servers, stop)))
        # The window starts once every call is up or has failed.
        async with asyncio.timeout(opts.connect_timeout + 5):
            await asyncio.gather(*(c.settled.wait() for c in callers))
        t0 = loop.time() + opts.warmup
        t1 = t0 + opts.duration
        end = t1 + GRACE_S[opts.workload]
        live = report.Progress(callers, opts, t0, t1, progress) if progress else None
        while loop.time() < end and not all(c.reason for c in callers):
            if live is not None:
                live.update(loop.time())
            await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
        if live is not None:
            live.done()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        results = [report.call_result(c, t0, t1) for c in callers]
        await asyncio.gather(*(_hang_up(c, http) for c in callers), return_exceptions=True)
    meta = {
        "url": opts.url,
        "options": asdict(opts) | {"token": "(set)" if opts.token else None},
        "started_utc": started_utc,
        "window_monotonic": [round(t0, 3), round(t1, 3)],
        "load_avg_before": load_before,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "versions": report.versions(),
    }
    return report.document(results, opts, meta)


# -- command line ---------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 2000:
        raise argparse.ArgumentTypeError("must be between 1 and 2000")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be >= 0 and < 1")
    return value


def add_parser(subparsers: Any) -> None:
    """Add the ``loadtest`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "loadtest",
        help="call a running voicegate with N real WebRTC callers and report latency",
        description=(
            "Start N headless WebRTC calls against URL (a running voicegate, local or remote), "
            "hold them for --duration seconds and report connect time, round trip (markers) or "
            "end-of-speech to first answer audio (turns), frames per second, loss and failed "
            "calls. Exits 1 when any call failed, 2 on bad options. See docs/loadtest.md."
        ),
    )
    p.add_argument("url", help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--calls", type=_count, default=1, help="concurrent calls (default 1)")
    p.add_argument(
        "--duration",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds measured once every call is up (default 10)",
    )
    p.add_argument(
        "--ramp",
        type=_positive,
        default=10.0,
        metavar="CALLS_PER_S",
        help="calls started per second (default 10)",
    )
    p.add_argument("--token", default=None, help="signaling access token [env VOICEGATE_TOKEN]")
    p.add_argument(
        "--relay",
        action="store_true",
        help="relay candidates only, through the TURN server from GET /api/ice-servers",
    )
    p.add_argument("--workload", choices=WORKLOADS, default="markers", help="default markers")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results here")
    p.add_argument(
        "--warmup", type=float, default=2.0, metavar="S", help="seconds before the window"
    )
    p.add_argument("--connect-timeout", type=_positive, default=20.0, metavar="S", help="per call")
    p.add_argument(
        "--think-ms",
        type=float,
        default=None,
        help="turns: the brain's think time; turn_ms minus it is reported as gateway_ms",
    )
    p.add_argument("--loss", type=_fraction, default=0.0, help="drop this share of RTP each way")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="delay RTP by 0..this ms")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay RTP by this ms")
    p.add_argument("--seed", type=int, default=5, help="seed of the loss/jitter generator")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import aiohttp

    from voicegate import logs
    from voicegate.testing import report

    why = check_url(args.url)
    if why is not None:
        print(f"voicegate loadtest: {why}", file=sys.stderr)
        return 2
    logs.configure("auto", "error")  # the callers' own aiortc chatter is not the report
    from voicegate.media import ice

    # Host candidates as a server bound to that host would offer them: loopback only for a
    # loopback URL (aioice leaves 127.0.0.1 out otherwise), every interface for a remote one.
    ice.configure_host_addresses(ice.default_host_addresses(urlsplit(args.url).hostname or ""))
    opts = LoadOptions(
        url=args.url.rstrip("/"),
        calls=args.calls,
        duration=args.duration,
        ramp=args.ramp,
        token=args.token or os.environ.get("VOICEGATE_TOKEN") or None,
        relay=args.relay,
        workload=args.workload,
        warmup=max(0.0, args.warmup),
        connect_timeout=args.connect_timeout,
        think_ms=args.think_ms,
        loss=args.loss,
        jitter_ms=max(0.0, args.jitter_ms),
        delay_ms=max(0.0, args.delay_ms),
        seed=args.seed,
    )
    try:
        doc = asyncio.run(run(opts, progress=sys.stdout if sys.stdout.isatty() else None))
    except (RuntimeError, aiohttp.ClientError) as exc:
        print(f"voicegate loadtest: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1))
    print(report.table(doc))
    failed = doc["summary"]["calls_failed"]
    if failed:
        print(f"voicegate loadtest: {failed} of {opts.calls} calls failed", file=sys.stderr)
        return 1
    return 0
