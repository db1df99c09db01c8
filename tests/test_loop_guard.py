"""The blocked-loop guard itself: it must notice a stall, and stay quiet when the loop answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.loop_guard import _Watchdog


@pytest.mark.blocks_loop
async def test_watchdog_catches_a_stall_and_where_it_was() -> None:
    dog = _Watchdog(asyncio.get_running_loop(), limit=0.2)
    dog.start()
    await asyncio.sleep(0.1)
    time.sleep(0.5)  # noqa: ASYNC251 - the stall under test
    await asyncio.sleep(0.1)
    dog.stop.set()
    dog.join()
    assert dog.worst >= 0.3
    assert "test_watchdog_catches_a_stall" in dog.stack


async def test_watchdog_stays_quiet_on_a_live_loop() -> None:
    dog = _Watchdog(asyncio.get_running_loop(), limit=0.2)
    dog.start()
    for _ in range(10):
        await asyncio.sleep(0.03)
    dog.stop.set()
    dog.join()
    assert dog.worst == 0.0
