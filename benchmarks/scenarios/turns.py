"""Turns: the caller's end of speech to the first answer audio, every system alike."""

from __future__ import annotations

import functools
from typing import Any

from benchmarks.scenarios.gateway_runs import CALLS, Mode, configuration, one_run


def turns(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    """Every system, the same runs x calls: voicegate and Pipecat through the stand-in's turns
    brain, the stock gateways with the same rules in process (no model hop; see one_run)."""
    return {
        kind: configuration(
            f"turns {kind}",
            functools.partial(one_run, kind, CALLS, mode.turns_s, brain="turns", workload="turns"),
        )
        for kind in kinds
    }


__all__ = ["turns"]
