"""voicegate's event signer makes exactly the SDK's signatures, chain and final frame included."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_sdk_signers import AsyncEventSigner, signers
from smithy_aws_core.identity import AWSCredentialsIdentity
from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage

from voicegate.backends.bedrock.event_signer import ChainedEventSigner

PROPS: Any = {"region": "us-east-1", "service": "bedrock"}


class _Clock:
    """One instant for both signers, moved by the test (the SDK reads ``datetime.now``)."""

    def __init__(self, start: datetime) -> None:
        self.value = start

    def now(self) -> datetime:
        return self.value


def _frozen_datetime_module(clock: _Clock) -> types.SimpleNamespace:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.value

    return types.SimpleNamespace(datetime=Frozen, UTC=UTC)


def _event(payload: bytes, *, with_int: bool = False) -> EventMessage:
    headers: dict[str, Any] = {
        ":message-type": "event",
        ":event-type": "chunk",
        ":content-type": "application/json",
    }
    if with_int:
        headers["n"] = 7  # not a string: framed by the SDK's own encoder
    return EventMessage(headers=headers, payload=payload)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 12, 7, 8, 0, 0, 123456, tzinfo=UTC),
        # The chain crosses midnight UTC: the signing key must follow the new day.
        datetime(2026, 12, 7, 23, 59, 59, 999000, tzinfo=UTC),
    ],
)
async def test_signatures_equal_the_sdks_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, start: datetime
) -> None:
    clock = _Clock(start)
    monkeypatch.setattr(signers, "datetime", _frozen_datetime_module(clock))
    first = AWSCredentialsIdentity(access_key_id="AKIDONE", secret_access_key="s" * 40)
    rotated = AWSCredentialsIdentity(access_key_id="AKIDTWO", secret_access_key="t" * 40)
    sdk = AsyncEventSigner(initial_signature=b"ab" * 32, event_encoder_cls=EventHeaderEncoder)
    ours = ChainedEventSigner(initial_signature=b"ab" * 32, now=clock.now)
    payloads = [b"x" * 2000, b"", b'{"event":{}}', b"\x00\xff" * 10, b"y" * 3000]
    for i, payload in enumerate(payloads):
        identity = first if i < 2 else rotated
        odd = i == 3
        a = await sdk.sign(event=_event(payload, with_int=odd), identity=identity, properties=PROPS)
        b = await ours.sign(
            event=_event(payload, with_int=odd), identity=identity, properties=PROPS
        )
        assert a.encode() == b.encode(), i
        clock.value += timedelta(milliseconds=437)
    a = await sdk.sign_empty(event=EventMessage(), identity=first, properties=PROPS)
    b = await ours.sign_empty(event=EventMessage(), identity=first, properties=PROPS)
    assert a.encode() == b.encode()
    with pytest.raises(RuntimeError):
        await ours.sign(event=_event(b"late"), identity=first, properties=PROPS)


async def test_a_wrong_secret_gives_another_signature() -> None:
    clock = _Clock(datetime(2026, 12, 7, tzinfo=UTC))
    one = ChainedEventSigner(initial_signature=b"0" * 64, now=clock.now)
    two = ChainedEventSigner(initial_signature=b"0" * 64, now=clock.now)
    a = AWSCredentialsIdentity(access_key_id="A", secret_access_key="a" * 40)
    b = AWSCredentialsIdentity(access_key_id="A", secret_access_key="b" * 40)
    sa = await one.sign(event=_event(b"p"), identity=a, properties=PROPS)
    sb = await two.sign(event=_event(b"p"), identity=b, properties=PROPS)
    assert sa.headers[":chunk-signature"] != sb.headers[":chunk-signature"]


async def test_an_event_with_content_cannot_be_the_final_empty_one() -> None:
    signer = ChainedEventSigner(initial_signature=b"0" * 64)
    identity = AWSCredentialsIdentity(access_key_id="A", secret_access_key="a" * 40)
    with pytest.raises(ValueError):
        await signer.sign_empty(event=_event(b"p"), identity=identity, properties=PROPS)
