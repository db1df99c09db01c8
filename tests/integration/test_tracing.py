"""OpenTelemetry traces: the real OTLP/HTTP protobuf export of the SDK's exporter, received by a
test collector and decoded with opentelemetry-proto; the span tree of a real call is checked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.receivers import Collector, attrs, collecting
from tests.support.server import running_server
from tests.support.spoken_call import spoken_call
from voicegate.backends.echo import EchoBackend
from voicegate.observability.tracing import CallTracer, tracing_enabled
from voicegate.signaling.keys import CALL_LOG, TRACER
from voicegate.store.record import CallRecord
from voicegate.testing.client import load_wav


def test_off_unless_an_endpoint_is_set() -> None:
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing_enabled({**on, "OTEL_SDK_DISABLED": "true"})
    assert not tracing_enabled({**on, "OTEL_TRACES_EXPORTER": "none"})


async def test_a_real_call_exports_its_trace(
    speech_wav: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the traces"))
    collector = Collector()
    async with collecting(collector) as endpoint:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "voicegate-test")
        async with running_server(EchoBackend(), call_store="none") as (url, app):
            pc_id = await spoken_call(url, speech)
            await app[CALL_LOG].flush()
            await app[TRACER].flush()
    assert collector.content_types == {"application/x-protobuf"}
    assert collector.resources[0]["service.name"] == "voicegate-test"
    by_name: dict[str, list[Any]] = {}
    for span in collector.spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["voicegate.call"]
    assert attrs(root)["voicegate.call_id"] == pc_id
    assert attrs(root)["voicegate.end_reason"] == "hangup"
    assert root.parent_span_id == b""
    assert {s.trace_id for s in collector.spans} == {root.trace_id}  # one trace per call
    (turn,) = by_name["voicegate.turn"]
    assert turn.parent_span_id == root.span_id
    assert root.start_time_unix_nano <= turn.start_time_unix_nano < turn.end_time_unix_nano
    assert turn.end_time_unix_nano <= root.end_time_unix_nano
    for stage in ("voicegate.turn.model", "voicegate.turn.playout"):
        (span,) = by_name[stage]
        assert span.parent_span_id == turn.span_id
    model, playout = by_name["voicegate.turn.model"][0], by_name["voicegate.turn.playout"][0]
    assert model.end_time_unix_nano == playout.start_time_unix_nano
    assert playout.end_time_unix_nano == turn.end_time_unix_nano
    (stream,) = by_name["voicegate.model_stream"]
    assert stream.parent_span_id == root.span_id


async def test_tools_and_renewals_become_spans() -> None:
    collector = Collector()
    async with collecting(collector) as endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer = CallTracer(exporter=OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        record = CallRecord(call_id="pc-t", started=1_800_000_000.0, ended=1_800_000_100.0)
        record.end_reason = "hangup"
        record.tool_calls += [
            {"t": 5.0, "name": "order_status", "tool_use_id": "t1", "ok": True, "ms": 250.0},
            {"t": 9.0, "name": "refund", "tool_use_id": "t2", "ok": False, "ms": 1000.0},
        ]
        record.continuations.append(
            {"t": 60.0, "kind": "renewal", "reason": "age", "leg": 2, "gap_ms": 3.5}
        )
        await tracer.deliver("call.ended", record)
        await tracer.flush()
        await tracer.aclose()
    tools = [s for s in collector.spans if s.name.startswith("execute_tool ")]
    assert sorted(attrs(s)["gen_ai.tool.name"] for s in tools) == ["order_status", "refund"]
    failed = next(s for s in tools if attrs(s)["gen_ai.tool.name"] == "refund")
    assert failed.status.code == 2  # STATUS_CODE_ERROR
    assert (failed.end_time_unix_nano - failed.start_time_unix_nano) == 1_000_000_000
    streams = sorted(
        (s for s in collector.spans if s.name == "voicegate.model_stream"),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [attrs(s)["voicegate.stream.leg"] for s in streams] == [1, 2]
    assert attrs(streams[1])["voicegate.stream.reason"] == "age"
    assert streams[0].end_time_unix_nano == streams[1].start_time_unix_nano
    await asyncio.sleep(0)
