"""One browser call: its session (lifecycle, timers, grace period), the offer checks, the inbound
audio pump and speaking detector, the RTVI data-channel messages, and the typed events it
publishes to its observers (metrics and recording listen; the call never calls them)."""

from voicegate.call.events import (
    BotAudio,
    CallClosing,
    CallConnected,
    CallEnded,
    CallEvent,
    CallInfo,
    CallObserver,
    CallStarted,
    RtpStats,
    TurnLatency,
    UserAudio,
)
from voicegate.call.sdp import OfferError
from voicegate.call.session import PeerOptions, PeerSession

__all__ = [
    "BotAudio",
    "CallClosing",
    "CallConnected",
    "CallEnded",
    "CallEvent",
    "CallInfo",
    "CallObserver",
    "CallStarted",
    "OfferError",
    "PeerOptions",
    "PeerSession",
    "RtpStats",
    "TurnLatency",
    "UserAudio",
]
