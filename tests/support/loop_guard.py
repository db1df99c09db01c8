"""A guard that fails any async test whose code blocks the event loop (as aiohttp's suite does).

Latency is the product: one synchronous call on the loop (a model inference, a file read, a
``time.sleep``) stalls every call's audio at once. A watchdog thread posts a heartbeat to the test's
loop every few milliseconds; when a heartbeat comes back later than ``VOICEGATE_TEST_MAX_BLOCK_S``
(default 1 s: well above scheduler noise on a busy 2-core machine, well below what a user hears as
a broken call), the thread keeps the main thread's stack at that moment and the test fails at
teardown with it. A test that blocks the loop on purpose says so with ``@pytest.mark.blocks_loop``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator

import pytest

MAX_BLOCK_S = float(os.environ.get("VOICEGATE_TEST_MAX_BLOCK_S", "1.0"))
_BEAT_S = 0.05


class _Watchdog(threading.Thread):
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        super().__init__(name="loop-guard", daemon=True)
        self.loop = loop
        self.limit = limit
        self.loop_thread = threading.get_ident()
        self.last_beat = time.monotonic()
        self.stop = threading.Event()
        self.worst = 0.0
        self.stack = ""

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(_BEAT_S):
            if not self.loop.is_running():
                # Between the test's loop runs pytest sets up and tears down sync fixtures: the
                # loop is parked, not blocked, so its silence then means nothing.
                self.last_beat = time.monotonic()
                continue
            try:
                self.loop.call_soon_threadsafe(self.beat)
            except RuntimeError:  # the loop closed under us: the test is over
                return
            late = time.monotonic() - self.last_beat
            if late > self.limit and late > self.worst:
                self.worst = late
                frame = sys._current_frames().get(self.loop_thread)
                self.stack = "".join(traceback.format_stack(frame)) if frame else ""


@pytest.fixture
async def loop_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail the test when its event loop stops answering for longer than MAX_BLOCK_S."""
    if request.node.get_closest_marker("blocks_loop"):
        yield
        return
    dog = _Watchdog(asyncio.get_running_loop(), MAX_BLOCK_S)
    dog.start()
    try:
        yield
    finally:
        dog.stop.set()
        dog.join()
    if dog.worst:
        pytest.fail(
            f"the event loop was blocked for {dog.worst:.2f} s (limit {MAX_BLOCK_S} s); "
            f"the loop thread was here:\n{dog.stack}",
            pytrace=False,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every coroutine test gets the guard, first among its fixtures."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and asyncio.iscoroutinefunction(function):
            fixturenames = getattr(item, "fixturenames", None)
            if fixturenames is not None and "loop_guard" not in fixturenames:
                fixturenames.insert(0, "loop_guard")
