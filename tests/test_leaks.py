"""Calls release everything they hold: 20 calls in a row leave no tasks, threads or sockets."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import numpy as np

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.testing.client import CallClient


def _call_threads() -> list[str]:
    """Threads other than the loop's default executor: that pool is shared by all calls (aiortc
    encodes there), grows lazily up to a fixed bound and is not a per-call resource."""
    return [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.05)
        gc.collect()


async def _one_call(url: str, hangup_by_delete: bool) -> None:
    client = CallClient(url)
    try:
        async with asyncio.timeout(20):
            await client.connect()
            await client.wait_for("bot-ready", 10)
            tone = (8000 * np.sin(np.arange(48000 * 0.4) * 2 * np.pi * 300 / 48000)).astype(
                np.int16
            )
            client.mic.play(tone)
            await client.wait_frames(10, 5)
            if hangup_by_delete:
                assert await client.hangup() == 204
    finally:
        await client.close()


async def test_twenty_calls_leave_nothing_behind() -> None:
    async with running_server(EchoBackend()) as (url, app):
        from voicegate.signaling.app import SESSIONS

        await _one_call(url, True)  # warm-up: lazily created executors and caches
        await _settle()
        tasks0 = len(asyncio.all_tasks())
        threads0 = _call_threads()
        fds0 = _fds()
        for i in range(20):
            # Half end with DELETE, half by the client just closing its peer connection.
            await _one_call(url, hangup_by_delete=i % 2 == 0)
        async with asyncio.timeout(15):
            for session in list(app[SESSIONS].values()):
                await session.closed.wait()
        await _settle()
        assert len(asyncio.all_tasks()) <= tasks0, [t.get_coro() for t in asyncio.all_tasks()]
        assert _call_threads() == threads0
        executor_threads = threading.active_count() - len(threads0)
        assert executor_threads <= min(32, (os.cpu_count() or 1) + 4)
        assert _fds() <= fds0
