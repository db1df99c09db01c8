"""Real callers for tests, load tests and benchmarks: a headless aiortc caller (client.py),
the load-test signals and workloads, and ``voicegate loadtest`` (loadtest.py).

The names below load on first use, so that building the command line (which registers
``voicegate loadtest``) does not import aiortc."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["CallClient", "OfferRefused", "PcmTrack", "load_wav"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("voicegate.testing.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
