"""The HTTP face of voicegate: signaling routes, access control, admission, health, the page.

    app      create_app (state, middlewares, routes) and drain
    listener serve(): the listening sockets, slow-client deadline, connections per address
    offers   the call API handlers; requests: their typed, checked bodies
    calls    CallRegistry, the one owner of the pc_id -> call map
    middleware  CORS, rate limits, JSON errors, response headers
    access   tokens or open dev mode for a request; auth: the token format
    admission   refusing calls before the running ones degrade (the one loop-lag probe)
    health   /healthz, /readyz, /metrics;  pages: / and /static/
    ratelimit, turn, keys, errors: the small pieces they share

The names below load on first use, so ``voicegate token`` (which needs only ``auth``) does not
import the media stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["CallRegistry", "Listener", "conversation_settings", "create_app", "drain", "serve"]

_HOMES = {
    "CallRegistry": "voicegate.signaling.calls",
    "Listener": "voicegate.signaling.listener",
    "serve": "voicegate.signaling.listener",
    "conversation_settings": "voicegate.signaling.app",
    "create_app": "voicegate.signaling.app",
    "drain": "voicegate.signaling.app",
}

if TYPE_CHECKING:
    from voicegate.signaling.app import conversation_settings, create_app, drain
    from voicegate.signaling.calls import CallRegistry
    from voicegate.signaling.listener import Listener, serve


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
