"""What ``voicegate loadtest`` reports: per-call figures, the summary, the JSON and the table.

The JSON's ``summary`` has at least calls_ok, calls_failed, rtt_ms {p50, p95, p99} (markers
round trip; null values on the turns workload), turn_ms beside it (turns: end of speech -> first
answer audio at the caller), fps_min and connect_ms {p50, max}; ``failures`` counts the reasons.
"""

from __future__ import annotations

import platform
from collections import Counter
from importlib import metadata
from typing import TYPE_CHECKING, Any, TextIO

from voicegate.testing.signals import percentiles

if TYPE_CHECKING:
    from voicegate.testing.loadtest import Caller, LoadOptions

__all__ = ["MAX_EVENTS", "PACKAGES", "Progress", "call_result", "document", "table", "versions"]

MAX_EVENTS = 200
PACKAGES = ("voicegate", "aiortc", "aioice", "av", "aiohttp", "aws-sdk-bedrock-runtime", "awscrt")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _inbound(client: Any) -> dict[str, int]:
    """Packets received and lost (RTCP receiver figures aiortc keeps per inbound stream)."""
    out = {"packets_received": 0, "packets_lost": 0}
    if client is None:
        return out
    for transceiver in client.pc.getTransceivers():
        receiver = transceiver.receiver
        streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
        for stream in streams.values():
            out["packets_received"] += int(stream.packets_received)
            out["packets_lost"] += max(0, int(stream.packets_lost))
    return out


def _server_events(client: Any, t0: float) -> list[dict[str, Any]]:
    """The call's server messages (stream renewals, recoveries...; not the periodic RTP
    statistics), with their arrival in seconds from the window's start."""
    if client is None:
        return []
    out = []
    for msg in client.of_type("server-message"):
        data = msg.get("data", {})
        if isinstance(data, dict) and data.get("kind") != "rtp-stats":
            out.append({"at_s": round(msg["_t"] - t0, 2), **data})
    return out[:MAX_EVENTS]


def call_result(caller: Caller, t0: float, t1: float) -> dict[str, Any]:
    """One call's entry in the JSON ``calls`` list."""
    result: dict[str, Any] = {
        "index": caller.index,
        "ok": caller.reason is None,
        "reason": caller.reason,
        "status": caller.status,
        "pc_id": getattr(caller.client, "pc_id", "") or None,
        "connect_ms": caller.connect_ms,
    }
    if caller.connected_at is None:
        return result
    result.update(caller.analyzer.measure(caller.track.sent, t0, t1))
    result.update(_inbound(caller.client))
    pair = caller.client.selected_candidate_types() if caller.client is not None else None
    result["candidates"] = list(pair) if pair else None
    result["server_events"] = _server_events(caller.client, t0)
    if result["ok"] and result["frames"] == 0:
        result["ok"] = False
        result["reason"] = caller.reason = "no audio received in the window"
    return result


def document(
    calls: list[dict[str, Any]], opts: LoadOptions, meta: dict[str, Any]
) -> dict[str, Any]:
    ok = [c for c in calls if c["ok"]]
    measured = [c for c in calls if "fps" in c]
    rtts = [ms for c in measured for ms in c.get("rtt_ms", [])]
    turn = [ms for c in measured for ms in c.get("turn_ms", [])]
    fps = [c["fps"] for c in measured]
    connect = [c["connect_ms"] for c in calls if c["connect_ms"] is not None]
    received = sum(c.get("packets_received", 0) for c in measured)
    lost = sum(c.get("packets_lost", 0) for c in measured)
    conn = percentiles(connect)
    summary: dict[str, Any] = {
        "workload": opts.workload,
        "calls": len(calls),
        "calls_ok": len(ok),
        "calls_failed": len(calls) - len(ok),
        "failures": dict(Counter(c["reason"] for c in calls if not c["ok"])),
        "window_s": opts.duration,
        "connect_ms": {"p50": conn["p50"], "max": conn["max"]},
        "rtt_ms": percentiles(rtts),
        "fps_min": round(min(fps), 2) if fps else None,
        "fps_mean": round(sum(fps) / len(fps), 2) if fps else None,
        "packets_received": received,
        "packets_lost": lost,
        "loss_percent": round(100 * lost / (received + lost), 2) if received + lost else None,
    }
    if opts.workload == "markers":
        summary["markers_sent"] = sum(c.get("markers_sent", 0) for c in measured)
        summary["markers_lost"] = sum(c.get("markers_lost", 0) for c in measured)
    else:
        summary["turn_ms"] = turn_ms = percentiles(turn)
        summary["turns"] = sum(c.get("turns", 0) for c in measured)
        summary["turns_unanswered"] = sum(c.get("turns_unanswered", 0) for c in measured)
        if opts.think_ms is not None:
            summary["think_ms"] = opts.think_ms
            # Percentiles, mean and max shift with the data, so the gateway's figures are the
            # reported turn figures minus the think time: derived from the rounded ones, they
            # always match them to the digit (computed apart, 522.05 - 500 could round to 22.1
            # beside a turn p50 of 522.0).
            summary["gateway_ms"] = {
                k: v if k == "n" or v is None else round(v - opts.think_ms, 1)
                for k, v in turn_ms.items()
            }
    return {"summary": summary, "calls": calls, "meta": meta}


def _f(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _pct(p: dict[str, Any]) -> str:
    return f"p50 {_f(p['p50'])}  p95 {_f(p['p95'])}  p99 {_f(p['p99'])}  (n={p['n']})"


def table(doc: dict[str, Any], per_call_limit: int = 20) -> str:
    """The final report, plain text."""
    s, meta = doc["summary"], doc["meta"]
    lines = [
        f"voicegate loadtest {meta['url']}: {s['calls']} calls, workload {s['workload']}, "
        f"window {s['window_s']:g} s",
        f"  connect ms         p50 {_f(s['connect_ms']['p50'])}  max {_f(s['connect_ms']['max'])}",
    ]
    if s["workload"] == "markers":
        lines.append(f"  marker RTT ms      {_pct(s['rtt_ms'])}")
        lines.append(f"  markers lost       {s['markers_lost']} of {s['markers_sent']}")
    else:
        lines.append(f"  speech end -> answer ms  {_pct(s['turn_ms'])}")
        if "gateway_ms" in s:
            lines.append(
                f"  minus think {_f(s['think_ms'])} ms  {_pct(s['gateway_ms'])}  (gateway's own)"
            )
        lines.append(f"  turns unanswered   {s['turns_unanswered']} of {s['turns']}")
        if not s["turns"]:
            lines.append("  (no turn ended inside the window: turns are ~6 s apart, use a longer "
                         "--duration)")  # fmt: skip
    lines.append(f"  frames/s received  min {_f(s['fps_min'])}  mean {_f(s['fps_mean'])}")
    lines.append(
        f"  loss               {_f(s['loss_percent'])} % ({s['packets_lost']} of "
        f"{s['packets_received'] + s['packets_lost']} packets)"
    )
    lines.append(f"  calls              {s['calls_ok']} ok, {s['calls_failed']} failed")
    for reason, count in s["failures"].items():
        lines.append(f"    failed x{count}: {reason}")
    calls = doc["calls"]
    if 1 < len(calls) <= per_call_limit:
        key = "rtt_ms" if s["workload"] == "markers" else "turn_ms"
        lines.append(
            f"  {'call':>4} {'connect':>8} {key + ' p50':>11} {'p95':>7} {'fps':>6}  status"
        )
        for c in calls:
            p = percentiles(c.get(key, []))
            status = "ok" if c["ok"] else c["reason"]
            lines.append(
                f"  {c['index']:>4} {_f(c['connect_ms']):>8} {_f(p['p50']):>11} "
                f"{_f(p['p95']):>7} {_f(c.get('fps')):>6}  {status}"
            )
    return "\n".join(lines)


class Progress:
    """One live line on a terminal: calls up, failed, time, the latest latency and frame rate."""

    def __init__(
        self, callers: list[Caller], opts: LoadOptions, t0: float, t1: float, out: TextIO
    ) -> None:
        self.callers, self.opts, self.t0, self.t1, self.out = callers, opts, t0, t1, out
        self._width = 0

    def update(self, now: float) -> None:
        up = sum(1 for c in self.callers if c.connected_at is not None and c.reason is None)
        failed = sum(1 for c in self.callers if c.reason is not None)
        phase = "warm-up" if now < self.t0 else "measuring" if now < self.t1 else "finishing"
        recent: list[float] = []
        frames = 0
        for c in self.callers:
            a = c.analyzer
            frames += sum(1 for t in a.frames[-60:] if t >= now - 1.0)
            if self.opts.workload == "markers":
                recent += [ms for t, ms in a.round_trips(c.track.sent) if t >= now - 5.0]
            else:
                recent += [ms for t, ms in a.turn_times(c.track.sent) if ms and t >= now - 15.0]
        p = percentiles(recent)
        label = "rtt" if self.opts.workload == "markers" else "turn"
        line = (
            f"{phase} {max(0.0, now - self.t0):5.1f}/{self.opts.duration:g} s | calls {up} up, "
            f"{failed} failed | {label} p50 {_f(p['p50'])} p95 {_f(p['p95'])} ms | "
            f"{frames / max(1, up):.1f} frames/s per call"
        )
        self._width = max(self._width, len(line))
        self.out.write("\r" + line.ljust(self._width))
        self.out.flush()

    def done(self) -> None:
        self.out.write("\n")
        self.out.flush()
