"""Marker round trip under loss: the caller drops and delays its own RTP, both ways, seeded."""

from __future__ import annotations

import functools
from typing import Any

from benchmarks.scenarios.gateway_runs import CALLS, Mode, configuration, one_run


def loss(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    """voicegate at every loss rate of the mode, the peers at ``peer_losses``."""
    out: dict[str, Any] = {}
    for kind in kinds:
        for rate in mode.losses if kind == "voicegate" else mode.peer_losses:
            label = f"{kind} loss {rate:.0%} jitter 10ms"
            out[label] = configuration(
                f"loss {label}",
                functools.partial(
                    one_run, kind, CALLS, mode.latency_s, loss=rate, jitter_ms=10.0, seed=7
                ),
            )
    return out


__all__ = ["loss"]
