"""Soak: a couple of hundred short calls, sequential and concurrent, give everything back.

The long variant with its figures is benchmarks/soak.py (``python -m benchmarks.soak``)."""

from __future__ import annotations

import os

import pytest
from benchmarks.scenarios.soak import echo_server, soak

SEQUENTIAL = 100
BATCHES = 10
BATCH_SIZE = 10
RSS_BUDGET_MB = 12.0
"""Growth allowed over the whole run (allocator slack, caches), about 60 kB a call: a leak of
one call's media state (decoder, buffers, ~1 MB) would blow it many times over."""


# The soak's own gc.collect() over hundreds of calls' garbage is a deliberate pause of the loop
# (the leak check needs it), over a second on a loaded machine; the calls' own code is what the
# guard watches elsewhere.
@pytest.mark.blocks_loop
async def test_hundreds_of_calls_leave_nothing_behind() -> None:
    # No offer rate limit and no load shedding: this is about leaks, on a machine that may be
    # busy with other work (the load guard would rightly refuse calls then).
    limits = {
        "max_sessions": BATCH_SIZE,
        "offer_rate": 0,
        "max_loop_lag_ms": 0,
        # One load client makes every offer: the per-caller pending bound is off, as the
        # offer rate is.
        "max_pending_per_subject": 0,
        "max_pending_offers": 0,
    }
    async with echo_server(**limits) as (url, app):
        report = await soak(url, app, SEQUENTIAL, BATCHES, BATCH_SIZE)
    print({k: v for k, v in report.as_dict().items() if k != "failures"})
    assert not report.failures, (len(report.failures), report.failures[:3])
    assert report.calls == SEQUENTIAL + BATCHES * BATCH_SIZE
    base, after = report.baseline, report.after
    assert after.tasks <= base.tasks
    assert after.call_threads == base.call_threads
    # The shared executor is bounded (asyncio's default pool size), whatever the call count.
    assert after.executor_threads <= min(32, (os.cpu_count() or 1) + 4)
    assert after.fds <= base.fds
    assert after.rss_mb - base.rss_mb < RSS_BUDGET_MB
    # The batches really overlapped (the server held all of a batch's calls at once).
    assert report.peak_calls == BATCH_SIZE
