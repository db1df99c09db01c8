"""The PNG plots beside the tables (matplotlib, the ``bench`` extra; none without it)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None where it is not installed
    (the tables do not need it)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def capacity(results: dict[str, Any], out: Path) -> list[str]:
    """``capacity.png`` of the suite's ladder: CPU over N and RTT p95 over N, per system."""
    plt = _pyplot()
    cap = results.get("capacity", {})
    if plt is None or not cap:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, c in cap.items():
        if c["cpu_points"]:
            a1.plot(*zip(*c["cpu_points"], strict=True), "o", label=kind, alpha=0.6)
        ns = [int(n) for n in c["steps"]]
        p95 = [s["agg"].get("rtt_p95", {}).get("median") for s in c["steps"].values()]
        a2.plot(ns, [v or 0 for v in p95], "o-", label=kind)
    a2.axhline(80, color="grey", ls="--", lw=1)
    a1.set(xlabel="concurrent calls", ylabel="gateway CPU % of one core", title="CPU")
    a2.set(xlabel="concurrent calls", ylabel="RTT p95 ms (median of runs)", title="Latency")
    a1.legend()
    a2.legend()
    fig.savefig(out / "capacity.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return ["capacity.png"]


def long_calls(results: dict[str, Any], path: Path) -> bool:
    """The long-call curves: per variant, the first call of each run, its renewals in red."""
    plt = _pyplot()
    if plt is None:
        return False
    variants = [v for v in results["variants"] if results["runs"].get(v)]
    fig, axes = plt.subplots(len(variants), 1, figsize=(9, 2.6 * len(variants)), squeeze=False)
    for ax, variant in zip(axes[:, 0], variants, strict=True):
        key = "turn" if variant.startswith("turns") else "rtt"
        for i, doc in enumerate(results["runs"][variant]):
            call = doc["calls"][0]
            ax.plot(call.get(f"{key}_at_s", []), call.get(f"{key}_ms", []), ".-", ms=3,
                    lw=0.8, label=f"run {i + 1}")  # fmt: skip
            for event in call.get("server_events", []):
                if event.get("kind") in ("renewal", "recovery"):
                    ax.axvline(event["at_s"], color="red", alpha=0.25, lw=1)
        label = "speech end -> answer ms" if key == "turn" else "marker RTT ms"
        ax.set(ylabel=label, title=f"{variant} (red: stream renewals)")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(bottom=0)
    axes[-1, 0].set_xlabel("seconds into the measured window")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


__all__ = ["capacity", "long_calls"]
