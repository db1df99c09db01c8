"""Admission control: the loop-lag probe, the decision, and the 503 the HTTP layer gives."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling.admission import Admission, LagMonitor
from voicegate.signaling.app import ADMISSION
from voicegate.testing.client import CallClient

OFFER_LIKE = {"sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n", "type": "offer"}


async def test_monitor_sees_a_loop_that_is_steadily_late_and_forgets_it() -> None:
    monitor = LagMonitor(interval=0.01, window=10)
    monitor.start()
    try:
        await asyncio.sleep(0.2)
        assert monitor.lag_ms < 20
        time.sleep(0.3)  # noqa: ASYNC251 - one long stall (a GC pause): not an overload
        await asyncio.sleep(0.05)
        assert monitor.lag_ms < 20 and monitor.max_ms >= 250
        stop = asyncio.Event()

        async def hog() -> None:  # every loop iteration takes 40 ms: an overloaded gateway
            while not stop.is_set():
                time.sleep(0.04)  # noqa: ASYNC251 - blocking the loop on purpose
                await asyncio.sleep(0)

        task = asyncio.create_task(hog())
        await asyncio.sleep(0.8)
        assert monitor.lag_ms >= 25
        stop.set()
        await task
        await asyncio.sleep(0.3)  # ten quiet probes replace the late ones
        assert monitor.lag_ms < 20
    finally:
        await monitor.stop()


def test_a_few_stalls_do_not_close_the_door_a_steady_lag_does() -> None:
    monitor = LagMonitor(window=10)
    admission = Admission(max_sessions=5, max_loop_lag_ms=25, monitor=monitor)
    for lag in (0.4, 0.3, 0.2, 0.001, 0.001, 0.001, 0.001, 0.001):
        monitor.observe(lag)
    assert admission.decide(1) is None
    for _ in range(4):
        monitor.observe(0.06)
    refusal = admission.decide(1)
    assert refusal is not None and refusal.reason == "loop_lag"
    assert refusal.loop_lag_ms == 60 and refusal.retry_after > 0
    full = admission.decide(5)
    assert full is not None and full.reason == "max_sessions"
    assert admission.refused == {"loop_lag": 1, "max_sessions": 1}
    assert Admission(5, 0, monitor).decide(1) is None  # 0 turns the lag limit off
    assert admission.decide(0) is None  # no call in progress: nothing to protect


async def test_offer_refused_with_503_retry_after_and_reason_while_the_loop_lags() -> None:
    async with running_server(EchoBackend(), max_loop_lag_ms=20) as (url, app):
        monitor = app[ADMISSION].monitor
        first = CallClient(url)
        async with aiohttp.ClientSession() as http, asyncio.timeout(20):
            await first.connect()  # a call in progress, which the lag limit protects
            for _ in range(monitor._samples.maxlen or 0):
                monitor.observe(0.08)
            async with http.post(f"{url}/api/offer", json=OFFER_LIKE) as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) > 0
                body = await resp.json()
                assert body["reason"] == "loop_lag" and body["loop_lag_ms"] >= 80
                assert "overloaded" in body["error"]
            async with http.get(f"{url}/healthz") as resp:
                assert (await resp.json())["loop_lag_ms"] >= 80
            for _ in range(monitor._samples.maxlen or 0):
                monitor.observe(0.0)
            client = CallClient(url)  # the loop is healthy again: calls are taken
            try:
                await client.connect()
                assert client.pc_id
            finally:
                await client.close()
                await first.close()


async def test_offer_refused_at_the_call_limit_with_its_reason() -> None:
    async with running_server(EchoBackend(), max_sessions=1) as (url, _):
        first = CallClient(url)
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(20):
                await first.connect()
                async with http.post(f"{url}/api/offer", json=OFFER_LIKE) as resp:
                    assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
                    body = await resp.json()
                    assert body["reason"] == "max_sessions" and "limit of 1" in body["error"]
        finally:
            await first.close()
