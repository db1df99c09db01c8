"""Marker round trip: every system, RUNS x CALLS calls through the stand-in's echo brain."""

from __future__ import annotations

import functools
from typing import Any

from benchmarks.scenarios.gateway_runs import CALLS, Mode, configuration, one_run


def latency(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    return {
        kind: configuration(
            f"latency {kind}", functools.partial(one_run, kind, CALLS, mode.latency_s)
        )
        for kind in kinds
    }


__all__ = ["latency"]
