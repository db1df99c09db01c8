"""Webhooks: each call's start and end POSTed to the team's systems, signed per the Standard
Webhooks specification (standardwebhooks.com), so any of its libraries verifies them.

Delivery never touches a call: records arrive from ``CallLog`` (already off the audio path) and
go on a bounded queue; a few sender tasks POST them. A timeout, a refused connection, a 5xx, 408
or 429 is retried with exponential backoff and jitter under the *same* ``webhook-id`` (receivers
de-duplicate on it) until ``retry_seconds`` have passed since the first try; then the delivery is
given up, logged and counted. Other 4xx answers are the receiver saying no: not retried. Every
outcome is counted in ``voicegate_webhooks_total{event,result}`` (result: delivered, retried,
gave_up, rejected, dropped - the queue was full).

Signing: ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` with the
secret's key (``whsec_<base64>``). The secret file may hold several secrets, one per line: each
signs, so a receiver can move to a new secret without missing a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog

from voicegate.signing import SECRET_PREFIX, parse_secrets, sign
from voicegate.store.record import CallRecord, RecordKind, iso

__all__ = ["SECRET_PREFIX", "WebhookMessage", "WebhookSender", "parse_secrets", "sign"]

log = structlog.get_logger(__name__)

MAX_QUEUED: Final = 2000
SENDERS: Final = 4
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 60.0
MAX_ANSWER_BYTES: Final = 64 * 1024
RETRY_STATUSES: Final = frozenset({408, 429})


@dataclass(slots=True)
class WebhookMessage:
    url: str
    event: str
    msg_id: str
    body: bytes
    first_try: float
    attempts: int = 0


class WebhookSender:
    """A ``CallSink``: every record becomes one message per configured URL, plus one per URL
    of the call's agent (``agent_urls``: an agent's own ``webhook_url`` in the agents file)."""

    def __init__(
        self,
        urls: Sequence[str],
        keys: Sequence[bytes] = (),
        timeout_s: float = 10.0,
        retry_seconds: float = 300.0,
        on_result: Callable[[str, str], None] = lambda _event, _result: None,
        agent_urls: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.agent_urls = {name: tuple(u) for name, u in (agent_urls or {}).items()}
        self.keys = tuple(keys)
        self.timeout_s = timeout_s
        self.retry_seconds = retry_seconds
        self._on_result = on_result
        self._queue: asyncio.Queue[WebhookMessage] = asyncio.Queue(MAX_QUEUED)
        self._senders: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.TimerHandle] = set()
        self._session: aiohttp.ClientSession | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- CallSink -------------------------------------------------------------------------------

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None:
        data = record.summary() if kind == "call.started" else record.to_json()
        body = json.dumps(
            {"type": kind, "timestamp": iso(time.time()), "data": data},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = time.monotonic()
        for url in dict.fromkeys(self.urls + self.agent_urls.get(record.agent, ())):
            self._enqueue(WebhookMessage(url, kind, msg_id, body, now))

    # -- sending --------------------------------------------------------------------------------

    def _enqueue(self, message: WebhookMessage) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._result(message, "dropped")
            log.warning(
                "webhook_dropped", url=message.url, webhook_event=message.event, queued=MAX_QUEUED
            )
            return
        self._idle.clear()
        if not self._senders:
            loop = asyncio.get_running_loop()
            self._senders = [loop.create_task(self._send_loop()) for _ in range(SENDERS)]

    async def _send_loop(self) -> None:
        while True:
            message = await self._queue.get()
            self._busy += 1
            try:
                await self._attempt(message)
            except Exception:
                # A bug here must not stop the sender: the message is given up, and said.
                self._result(message, "gave_up")
                log.exception("webhook_failed", url=message.url, webhook_event=message.event)
            finally:
                self._busy -= 1
                self._queue.task_done()
                self._check_idle()

    async def _attempt(self, message: WebhookMessage) -> None:
        message.attempts += 1
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "voicegate-webhooks",
            "webhook-id": message.msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.keys:
            headers["webhook-signature"] = sign(self.keys, message.msg_id, timestamp, message.body)
        status: int | None = None
        why = ""
        try:
            session = self._client()
            async with session.post(
                message.url,
                data=message.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.content.read(MAX_ANSWER_BYTES)
        except TimeoutError:
            why = "timeout"
        except aiohttp.ClientError as exc:
            why = type(exc).__name__
        if status is not None and 200 <= status < 300:
            self._result(message, "delivered")
            return
        if status is not None and status < 500 and status not in RETRY_STATUSES:
            self._result(message, "rejected")
            log.warning(
                "webhook_rejected", url=message.url, webhook_event=message.event, status=status
            )
            return
        why = why or f"status {status}"
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (message.attempts - 1))
        delay *= random.uniform(0.8, 1.2)
        if time.monotonic() + delay - message.first_try > self.retry_seconds:
            self._result(message, "gave_up")
            log.warning(
                "webhook_gave_up",
                url=message.url,
                webhook_event=message.event,
                webhook_id=message.msg_id,
                attempts=message.attempts,
                last_error=why,
            )
            return
        self._result(message, "retried")
        log.info(
            "webhook_retry", url=message.url, webhook_event=message.event, error=why, in_s=delay
        )
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def again() -> None:
            assert handle is not None
            self._waiting.discard(handle)
            self._enqueue(message)

        handle = loop.call_later(delay, again)
        self._waiting.add(handle)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=SENDERS * 2),
                # Proxies are the operator's environment's business: trust_env keeps them.
                trust_env=True,
            )
        return self._session

    def _result(self, message: WebhookMessage, result: str) -> None:
        self._on_result(message.event, result)

    def _check_idle(self) -> None:
        if self._queue.empty() and not self._busy and not self._waiting:
            self._idle.set()

    @property
    def pending(self) -> int:
        """Messages queued, being sent, or waiting for a retry."""
        return self._queue.qsize() + self._busy + len(self._waiting)

    async def settled(self) -> None:
        """Until nothing is queued, in flight or waiting for a retry (tests; shutdown)."""
        while self.pending:
            self._idle.clear()
            self._check_idle()
            await self._idle.wait()

    async def aclose(self, wait_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._queue.join()  # what is queued or in flight; not future retries
        for handle in self._waiting:
            handle.cancel()
        left = self._queue.qsize() + len(self._waiting)
        if left:
            log.warning("webhooks_unsent_at_shutdown", messages=left)
        self._waiting.clear()
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []
        if self._session is not None:
            await self._session.close()
            self._session = None
