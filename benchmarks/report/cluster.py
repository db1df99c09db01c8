"""The ``cluster-failover`` block of benchmarks/README.md (``python -m
benchmarks.cluster_failover``): failover, rolling restart, workers; each part its provenance."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.provenance import read
from benchmarks.report.cells import number

NAME = "cluster-failover"
HEADING = "Cluster"
PARTS = ("failover", "rolling", "workers")
FAILOVER_FIGURES = ("kill_to_bot_audio", "kill_to_turn_sent", "turn_to_bot_audio")


def seconds(failover: dict[str, Any], figure: str) -> tuple[str, str]:
    """A failover figure's median and maximum in seconds, as written: percentiles of the
    tries in ms (``FIGURE_ms``), or, in files written before, ``FIGURE_s`` {p50, max}."""
    if f"{figure}_ms" in failover:
        ms = failover[f"{figure}_ms"]
        p50, top = (None if v is None else v / 1000 for v in (ms["p50"], ms["max"]))
    else:
        p50, top = failover[f"{figure}_s"]["p50"], failover[f"{figure}_s"]["max"]
    return number(p50), number(top)


def _one_minute(load: list[float] | None) -> float | None:
    return load[0] if load else None


def block(results: dict[str, Any]) -> str:
    a, b, c = (results.get(k, {}).get("result") for k in PARTS)
    runs = {k: read(results[k]) for k in PARTS if k in results}
    lines = ["", "Cluster (`benchmarks/cluster_failover.py`; "
             "per part its commit and 1-min load average before -> after: "
             + ", ".join(f"{k} {r.commit[:9]}{' dirty' if r.dirty else ''} "
                         f"{_one_minute(r.load_before)} -> {_one_minute(r.load_after)}"
                         for k, r in runs.items()) + "):",
             ""]  # fmt: skip
    if a:
        (k50, kmax), (s50, smax), (t50, tmax) = (seconds(a, f) for f in FAILOVER_FIGURES)
        lines.append(
            f"- failover, {len(a['tries'])} tries (nodes in namespaces, relay-only caller, "
            f"stand-in): kill -9 -> first bot audio p50 {k50} s, max {kmax} s; of it "
            f"kill -> next turn sent (reconnect) p50 {s50} s / max {smax} s, and "
            f"turn ({a['speech_s']} s of speech) -> bot audio p50 {t50} s / max {tmax} s"
        )
    if b:
        lines.append(
            f"- rolling restart of 2 nodes x {b['calls'] // 2} calls: {b['lost']} of "
            f"{b['calls']} calls lost; " + ", ".join(
                f"node {s['node']} exit {s['exit_code']} after {s['drain_s']} s" for s in b["steps"]
            )
        )  # fmt: skip
    if c:
        lines += ["", "| workers | calls | refused | server CPU % of a core | per call "
                  "| RTT p50 / p95 ms | min fps |", "|" + " --- |" * 7]  # fmt: skip
        lines += [f"| {r['workers']} | {r['calls']} | {r['refused']} | "
                  f"{r['server_cpu_pct_of_core']} | {r['server_cpu_pct_per_call']} | "
                  f"{r['rtt_p50_ms']:.0f} / {r['rtt_p95_ms']:.0f} | {r['fps_min']} |"
                  for r in c]  # fmt: skip
        lines.append(
            "\nLoad client, stand-in and server share both cores (2-core machine, other work "
            "running: see the load average); RTT is the load client's marker round trip "
            "through the stand-in's echo brain. The per-address offer rate limit is off "
            "(one load client address); refusals are the node's own admission."
        )
    lines += [""]
    return "\n".join(lines)


__all__ = ["FAILOVER_FIGURES", "HEADING", "NAME", "PARTS", "block", "seconds"]
