"""Webhooks: real calls' starts and ends reach a real HTTP receiver, signed per the Standard
Webhooks spec and verified with the ``standardwebhooks`` package (a library voicegate does not
use to sign); a receiver that fails is retried under the same webhook-id; one that stays down
costs a counted give-up and nothing else."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.receivers import Receiver, receiving
from tests.support.server import running_server
from tests.support.spoken_call import spoken_call
from voicegate.backends.echo import EchoBackend
from voicegate.signaling.keys import CALL_LOG, WEBHOOKS
from voicegate.signing import parse_secrets, sign
from voicegate.testing.client import load_wav

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def secret_file(tmp_path: Path, *secrets: str) -> str:
    path = tmp_path / "webhook-secret"
    path.write_text("\n".join(secrets) + "\n")
    return str(path)


def test_signature_verifies_with_the_standard_library() -> None:
    keys = parse_secrets(SECRET)
    body = b'{"type":"call.ended","timestamp":"2026-12-07T00:00:00.000Z","data":{}}'
    import time

    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts)}
    headers["webhook-signature"] = sign(keys, "msg_1", ts, body)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    # A changed body, another secret, or another id does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"ended", b"start"), headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "msg_2"})


def test_two_secrets_both_sign_for_rotation() -> None:
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    keys = parse_secrets(f"{SECRET}\n{other}\n")
    body = b"{}"
    header = sign(keys, "msg_9", 1_800_000_000, body)
    assert len(header.split(" ")) == 2
    for secret in (SECRET, other):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        assert sign([raw], "msg_9", 1_800_000_000, body) in header.split(" ")


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "no secret"), ("abc", "starts with whsec_"), ("whsec_!!", "not base64"),
     ("whsec_" + base64.b64encode(b"short").decode(), "at least 24")],
)  # fmt: skip
def test_bad_secrets_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_secrets(text)


async def test_a_call_sends_started_and_ended_signed(
    speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the webhooks"))
    receiver = Receiver()
    async with receiving(receiver) as hook:
        async with running_server(
            EchoBackend(),
            webhook_url=(hook,),
            webhook_secret_file=secret_file(tmp_path, SECRET),
            call_store=f"sqlite:{tmp_path / 'calls.db'}",
        ) as (url, app):
            pc_id = await spoken_call(url, speech)
            await receiver.wait(lambda ev: any(e["type"] == "call.ended" for e in ev))
    verifier = Webhook(SECRET)
    for headers, body in receiver.got:
        verifier.verify(body, headers)  # raises if any delivery is not signed right
    types = [e["type"] for e in receiver.events()]
    assert types == ["call.started", "call.ended"]
    started, ended = receiver.events()
    assert started["data"]["call_id"] == ended["data"]["call_id"] == pc_id
    data = ended["data"]
    assert data["end_reason"] == "hangup"
    assert data["duration_s"] > 0
    assert data["started_at"].endswith("Z")
    assert data["backend"] == "echo"
    user = [t for t in data["transcript"] if t["role"] == "user"]
    assert user and "echo turn 1" in user[0]["text"]
    assert set(user[0]) >= {"role", "text", "at", "t"}
    assert data["turn_latency"] and data["turn_latency"][0]["total_ms"] > 0
    assert data["usage"] == {} or data["usage"]["total_tokens"] >= 0
    ids = {h["webhook-id"] for h, _ in receiver.got}
    assert len(ids) == 2  # one id per event


async def test_a_503_is_retried_with_the_same_id(
    speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the webhooks"))
    receiver = Receiver(statuses=[200, 503, 503])  # call.started fine; call.ended twice refused
    async with receiving(receiver) as hook:
        async with running_server(
            EchoBackend(),
            webhook_url=(hook,),
            webhook_secret_file=secret_file(tmp_path, SECRET),
            webhook_retry_seconds=60.0,
            call_store="none",
        ) as (url, app):
            await spoken_call(url, speech)
            await receiver.wait(lambda ev: [e["type"] for e in ev].count("call.ended") == 3)
            await app[WEBHOOKS].settled()
            metrics = app[METRICS_KEY()]
    ended = [(h, b) for h, b in receiver.got if json.loads(b)["type"] == "call.ended"]
    assert len({h["webhook-id"] for h, _ in ended}) == 1  # the same message, three times
    assert len({b for _, b in ended}) == 1
    hooks = "voicegate_webhooks_total"
    assert metrics.sample(hooks, event="call.ended", result="retried") == 2
    assert metrics.sample(hooks, event="call.ended", result="delivered") == 1


async def test_a_receiver_down_costs_only_a_counted_give_up(
    speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the webhooks"))
    receiver = Receiver()
    async with receiving(receiver) as hook:
        pass  # the port is closed again: nothing listens there any more
    async with running_server(
        EchoBackend(),
        webhook_url=(hook,),
        webhook_secret_file=secret_file(tmp_path, SECRET),
        webhook_retry_seconds=1.0,
        call_store="none",
    ) as (url, app):
        pc_id = await spoken_call(url, speech)  # the call itself is untouched
        await app[CALL_LOG].flush()
        await app[WEBHOOKS].settled()
        metrics = app[METRICS_KEY()]
    assert pc_id.startswith("pc-")
    hooks = "voicegate_webhooks_total"
    for event in ("call.started", "call.ended"):
        assert metrics.sample(hooks, event=event, result="gave_up") == 1
        assert metrics.sample(hooks, event=event, result="delivered") == 0


def METRICS_KEY() -> Any:  # noqa: N802 - reads like the key it is
    from voicegate.signaling.keys import METRICS

    return METRICS
