"""A slow tool's filler is kept in the call record, on the tool call it belongs to."""

from __future__ import annotations

from voicegate.call.events import CallEnded, CallInfo, CallStarted
from voicegate.conversation import (
    ConversationStats,
    ToolCallFinished,
    ToolCallStarted,
    ToolFiller,
)
from voicegate.observability.calllog import CallLog
from voicegate.store.record import CallRecord, RecordKind


class Keep:
    def __init__(self) -> None:
        self.got: list[tuple[RecordKind, CallRecord]] = []

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None:
        self.got.append((kind, record))


async def test_the_filler_is_on_its_tool_call_in_the_record() -> None:
    sink = Keep()
    call_log = CallLog([sink])
    call_log.on_call_event("pc-1", CallStarted(info=CallInfo(backend="echo")))
    call_log.on_call_event("pc-1", ToolCallStarted("slow", "t1", "{}"))
    call_log.on_call_event("pc-1", ToolFiller("slow", "t1", "One moment."))
    call_log.on_call_event("pc-1", ToolCallFinished("slow", "t1", True, "{}"))
    call_log.on_call_event("pc-1", ToolCallStarted("fast", "t2", "{}"))
    call_log.on_call_event("pc-1", ToolFiller("fast", "t-unknown", "ignored"))
    call_log.on_call_event("pc-1", ToolCallFinished("fast", "t2", True, "{}"))
    call_log.on_call_event("pc-1", CallEnded("hangup", 3.0, ConversationStats(tool_fillers=1)))
    await call_log.flush()
    slow, fast = sink.got[-1][1].tool_calls
    assert slow["filler"] == "One moment." and slow["ok"] is True
    assert "filler" not in fast
    await call_log.aclose()
