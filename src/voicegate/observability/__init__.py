"""Metrics (``GET /metrics``) and opt-in call recording. Both are observers of calls: they
subscribe to the typed call events (``voicegate.call.events``) that signaling registers them for,
and nothing on the call path calls them by hand."""

from voicegate.observability.exposition import CONTENT_TYPE
from voicegate.observability.metrics import GatewayMetrics
from voicegate.observability.recording import CallRecording, Recorder, RecordingOptions

__all__ = ["CONTENT_TYPE", "CallRecording", "GatewayMetrics", "Recorder", "RecordingOptions"]
