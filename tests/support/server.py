"""voicegate in the test's own process: the real app and listener on 127.0.0.1, any port."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from voicegate import gcpolicy, media
from voicegate.backends.base import Backend
from voicegate.config import media_setup, resolve
from voicegate.conversation.tools import ToolRegistry
from voicegate.signaling.app import create_app
from voicegate.signaling.listener import serve


@contextlib.asynccontextmanager
async def running_server(
    backend: Backend, *, tools: ToolRegistry | None = None, **overrides: Any
) -> AsyncIterator[tuple[str, web.Application]]:
    """The served base URL and the app, for the defaults with ``overrides`` applied (and
    ``tools`` instead of the default registry)."""
    # Load shedding by event-loop lag is tested on its own (test_loadguard.py); elsewhere a
    # busy test machine must not turn into refused calls, so it is off unless a test asks.
    settings: dict[str, Any] = {"max_loop_lag_ms": 0.0, **overrides, "port": 0}
    config = dataclasses.replace(resolve(None, env={}), **settings)
    media.configure(media_setup(config, backend.input_rate))
    app = create_app(config, backend, tools)
    listener = await serve(app, config, host="127.0.0.1", port=0)
    gcpolicy.freeze()  # as the CLI does once its start-up is over
    try:
        yield listener.url, app
    finally:
        await listener.close()
        gcpolicy.thaw()
