"""OpenTelemetry traces: one trace per call, exported over OTLP/HTTP (protobuf).

Configured only by the standard ``OTEL_*`` environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``..._TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``, ``OTEL_SDK_DISABLED``); off when no endpoint is
set. Each app has its own ``TracerProvider`` (the process-global one is never touched), so a
team's own instrumentation and several apps in one process do not interfere.

Spans are made when the call's record is complete (``call.ended``), from the times the record
holds, so nothing on the audio path waits for tracing; the SDK's batch processor exports from its
own thread. The tree:

    voicegate.call                        the whole call (gen_ai.usage.*, end reason)
      voicegate.turn                      user speech end -> first audio packet out
        voicegate.turn.model              user speech end -> first model audio
        voicegate.turn.playout            first model audio -> first packet out
      execute_tool NAME                   one tool call (GenAI semantic conventions)
      voicegate.model_stream              one model stream (leg), renewal or recovery
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from voicegate.store.record import CallRecord, RecordKind

__all__ = ["CallTracer", "tracing_enabled"]

ENDPOINT_VARS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
NS: Final = 1_000_000_000


def tracing_enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def _ns(wall: float) -> int:
    return int(wall * NS)


class CallTracer:
    """A ``CallSink``: a finished call's record becomes its trace."""

    def __init__(self, service_version: str = "", exporter: Any = None) -> None:
        resource = Resource.create({"service.version": service_version})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named the service.
            resource = resource.merge(Resource({"service.name": "voicegate"}))
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("voicegate")

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None:
        if kind == "call.started" or (kind == "call.failed" and record.transcript):
            return  # a started call is traced once, when its record is whole
        self.trace_call(record)

    def trace_call(self, record: CallRecord) -> None:
        start = record.started
        end = record.ended if record.ended is not None else start
        attributes: dict[str, Any] = {
            "voicegate.call_id": record.call_id,
            "voicegate.end_reason": record.end_reason,
            "voicegate.backend": record.backend,
            "voicegate.adopted": record.adopted,
            "voicegate.turns": len(record.turns),
            "voicegate.barge_ins": len(record.barge_ins),
        }
        if record.agent:
            attributes["gen_ai.agent.name"] = record.agent
        if record.backend == "bedrock":
            attributes["gen_ai.system"] = "aws.bedrock"
        for key, name in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
            if key in record.usage:
                attributes[f"gen_ai.usage.{name}"] = int(record.usage[key])
        root = self.tracer.start_span(
            "voicegate.call", kind=SpanKind.SERVER, attributes=attributes, start_time=_ns(start)
        )
        if record.end_reason.startswith(("error:", "backend-failed", "connection-failed")):
            root.set_status(Status(StatusCode.ERROR, record.end_reason))
        context = trace.set_span_in_context(root)
        for index, turn in enumerate(record.turns, 1):
            self._turn(context, start, index, turn)
        for tool in record.tool_calls:
            self._tool(context, start, tool)
        self._streams(context, record, start, end)
        for t, name in ((b["t"], "barge_in") for b in record.barge_ins):
            root.add_event(name, timestamp=_ns(start + float(t)))
        root.end(end_time=_ns(end))

    def _turn(self, context: Any, start: float, index: int, turn: Mapping[str, Any]) -> None:
        speech_end = start + float(turn.get("speech_end_t", turn.get("t", 0.0)))
        total = float(turn.get("total_ms") or 0.0) / 1000
        model_ms = turn.get("model_ms")
        span = self.tracer.start_span(
            "voicegate.turn",
            context=context,
            attributes={
                "voicegate.turn.index": index,
                "voicegate.turn.total_ms": float(turn.get("total_ms") or 0.0),
                **({"voicegate.turn.model_ms": float(model_ms)} if model_ms is not None else {}),
            },
            start_time=_ns(speech_end),
        )
        if model_ms is not None:
            inner = trace.set_span_in_context(span)
            first_audio = speech_end + float(model_ms) / 1000
            model = self.tracer.start_span(
                "voicegate.turn.model", context=inner, start_time=_ns(speech_end)
            )
            model.end(end_time=_ns(first_audio))
            playout = self.tracer.start_span(
                "voicegate.turn.playout", context=inner, start_time=_ns(first_audio)
            )
            playout.end(end_time=_ns(speech_end + total))
        span.end(end_time=_ns(speech_end + total))

    def _tool(self, context: Any, start: float, tool: Mapping[str, Any]) -> None:
        name = str(tool.get("name", ""))
        began = start + float(tool.get("t", 0.0))
        span = self.tracer.start_span(
            f"execute_tool {name}",
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": str(tool.get("tool_use_id", "")),
            },
            start_time=_ns(began),
        )
        if tool.get("ok") is False:
            span.set_status(Status(StatusCode.ERROR, "the tool failed"))
        span.end(end_time=_ns(began + float(tool.get("ms") or 0.0) / 1000))

    def _streams(self, context: Any, record: CallRecord, start: float, end: float) -> None:
        """One span per model stream: the first from the call's start, each next one from the
        continuation that opened it (its kind, reason and gap on it)."""
        marks = [(start, {"kind": "first", "leg": 1})] + [
            (start + float(c["t"]), c) for c in record.continuations
        ]
        for i, (began, info) in enumerate(marks):
            until = marks[i + 1][0] if i + 1 < len(marks) else end
            attributes: dict[str, AttributeValue] = {
                "voicegate.stream.leg": int(info.get("leg", i + 1)),
                "voicegate.stream.opened_by": str(info.get("kind", "")),
            }
            if "reason" in info:
                attributes["voicegate.stream.reason"] = str(info["reason"])
                attributes["voicegate.stream.gap_ms"] = float(info.get("gap_ms", 0.0))
                attributes["voicegate.stream.forced"] = bool(info.get("forced", False))
            span = self.tracer.start_span(
                "voicegate.model_stream",
                context=context,
                attributes=attributes,
                start_time=_ns(began),
            )
            span.end(end_time=_ns(max(began, until)))

    async def flush(self) -> None:
        await asyncio.to_thread(self.provider.force_flush)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)
