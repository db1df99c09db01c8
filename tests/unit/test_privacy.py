"""Redaction rules (``--redact``): applied to transcripts in call records (so webhooks, the
history and traces), and to logged transcript text."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from voicegate import logs
from voicegate.call.events import CallEnded, CallInfo, CallStarted
from voicegate.conversation import (
    ConversationStats,
    ToolCallFinished,
    ToolCallStarted,
    UserTranscript,
)
from voicegate.observability.calllog import CallLog
from voicegate.privacy import Redaction, parse_rule
from voicegate.store.record import CallRecord, RecordKind

SAID = "my card is 4111 1111 1111 1111, phone 555-0123 and mail is ann.lee@example.co.uk; room 12"


def test_rules() -> None:
    both = Redaction.from_rules(["digits", "email"])
    assert both.apply(SAID) == "my card is [digits], phone [digits] and mail is [email]; room 12"
    spoken = Redaction.from_rules(["digits"]).apply("it is 4 1 1 1 then 2")
    assert spoken == "it is [digits] then 2"
    custom = Redaction.from_rules([r"re:order-[A-Z]{3}"])
    assert custom.apply("about order-XYZ please") == "about [redacted] please"
    assert not Redaction.from_rules([])
    for bad in ("phone", "re:", "re:(unclosed", "re:" + "x" * 600):
        with pytest.raises(ValueError):
            parse_rule(bad)


class Keep:
    def __init__(self) -> None:
        self.got: list[tuple[RecordKind, CallRecord]] = []

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None:
        self.got.append((kind, record))


async def test_call_records_are_redacted_before_they_leave() -> None:
    sink = Keep()
    call_log = CallLog([sink], Redaction.from_rules(["digits", "email"]))
    call_log.on_call_event("pc-1", CallStarted(info=CallInfo(subject="ann", backend="echo")))
    call_log.on_call_event("pc-1", UserTranscript(SAID, final=True))
    call_log.on_call_event("pc-1", ToolCallStarted("lookup", "t1", '{"card": "4111111111111111"}'))
    call_log.on_call_event("pc-1", ToolCallFinished("lookup", "t1", True, '{"mail": "a@b.io"}'))
    call_log.on_call_event("pc-1", CallEnded("hangup", 3.0, ConversationStats()))
    await call_log.flush()
    assert [kind for kind, _ in sink.got] == ["call.started", "call.ended"]
    text = json.dumps(sink.got[-1][1].to_json())
    assert "4111" not in text and "example.co.uk" not in text and "a@b.io" not in text
    record = sink.got[-1][1]
    assert record.transcript[0]["text"].startswith("my card is [digits]")
    assert record.tool_calls[0]["ok"] is True and "[digits]" in record.tool_calls[0]["arguments"]
    await call_log.aclose()


async def test_adopted_and_failed_calls_send_the_right_events() -> None:
    sink = Keep()
    call_log = CallLog([sink])
    # Adopted from another node: no second call.started, but its end is reported here.
    call_log.on_call_event("pc-a", CallStarted(info=CallInfo(adopted=True)))
    call_log.on_call_event("pc-a", CallEnded("hangup", 9.0, ConversationStats()))
    # A reconnect in this process: the connection ends handed over, the call goes on.
    call_log.on_call_event("pc-r", CallStarted())
    call_log.on_call_event("pc-r", CallEnded("restart", 1.0, ConversationStats(), True))
    call_log.on_call_event("pc-r", CallStarted(restart=True))
    call_log.on_call_event("pc-r", CallEnded("error:throttled", 2.0, ConversationStats()))
    # Refused while being set up: only call.failed. A malformed offer: nothing.
    call_log.on_call_event("pc-f", CallEnded("backend-failed", 0.1, ConversationStats()))
    call_log.on_call_event("pc-b", CallEnded("bad-offer", 0.1, ConversationStats()))
    await call_log.flush()
    seen = [(kind, record.call_id, record.end_reason) for kind, record in sink.got]
    assert seen == [
        ("call.ended", "pc-a", "hangup"),
        ("call.started", "pc-r", ""),
        ("call.failed", "pc-r", "error:throttled"),
        ("call.ended", "pc-r", "error:throttled"),
        ("call.failed", "pc-f", "backend-failed"),
    ]
    await call_log.aclose()


async def test_a_moved_call_is_not_ended_here() -> None:
    sink = Keep()

    async def elsewhere(_pc_id: str) -> bool:
        return False

    call_log = CallLog([sink], still_ours=elsewhere)
    call_log.on_call_event("pc-m", CallStarted())
    call_log.on_call_event("pc-m", CallEnded("client-disconnect", 5.0, ConversationStats()))
    await call_log.flush()
    assert [kind for kind, _ in sink.got] == ["call.started"]
    await call_log.aclose()


def test_logged_transcripts_are_redacted() -> None:
    out = io.StringIO()
    logs.configure("json", "info", transcripts=True, stream=out, cache=False, redact=("digits",))
    try:
        structlog.get_logger("t").info("transcript", text="card 4111 1111 1111 1111")
        line = json.loads(out.getvalue().strip().splitlines()[-1])
        assert line["text"] == "card [digits]"
    finally:
        logs.configure("console", "info", cache=False)
