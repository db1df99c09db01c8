"""Logging set-up: structlog, JSON lines in production, readable lines on a terminal.

Nothing logged here carries audio, secrets or (by default) transcript text; calls bind their
``pc_id`` so every line of a call can be found.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

__all__ = ["MAX_VALUE_CHARS", "Redactor", "SECRET_WORDS", "TRANSCRIPT_KEYS", "configure"]
from voicegate.privacy import Redaction

SECRET_WORDS: Final = (
    "secret",
    "password",
    "passwd",
    "credential",
    "authorization",
    "access_key",
    "api_key",
    "signature",
)
"""Key names containing one of these are secrets; so are names ending in ``token`` (but not
``input_tokens``, a usage count)."""
TRANSCRIPT_KEYS: Final = frozenset({"text", "transcript", "system_prompt", "prompt"})
MAX_VALUE_CHARS: Final = 1000
"""Longer strings are cut: a base64 audio chunk or a whole request must never fill the logs."""


class Redactor:
    """A structlog processor, last before rendering, that keeps audio, secrets and (unless asked
    for) transcript text out of every log line, whatever the code that logged passed in.

    Audio is bytes (or base64 text): bytes become their length, long strings are cut. Secrets are
    recognised by key name. Transcript text (keys ``text``, ``transcript``, prompts) becomes its
    length unless the operator turned ``--log-transcripts`` on; then the ``--redact`` rules
    still apply to it."""

    def __init__(self, transcripts: bool = False, redaction: Redaction | None = None) -> None:
        self.transcripts = transcripts
        self.redaction = redaction or Redaction()

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            if key != "event":
                event[key] = self._clean(key, event[key], 0)
        return event

    def _clean(self, key: str, value: Any, depth: int) -> Any:
        lowered = key.lower()
        if lowered.endswith("token") or any(word in lowered for word in SECRET_WORDS):
            return "[redacted]"
        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{len(value)} bytes>"
        if isinstance(value, str):
            if lowered in TRANSCRIPT_KEYS:
                if not self.transcripts:
                    return f"<{len(value)} chars>"
                value = self.redaction.apply(value) if self.redaction else value
            if len(value) > MAX_VALUE_CHARS:
                return value[:MAX_VALUE_CHARS] + f"...<{len(value) - MAX_VALUE_CHARS} more chars>"
            return value
        if isinstance(value, dict) and depth < 3:
            return {str(k): self._clean(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple) and depth < 3:
            return [self._clean(key, v, depth + 1) for v in value[:50]]
        return value


def configure(
    fmt: str = "auto",
    level: str = "info",
    transcripts: bool = False,
    stream: TextIO | None = None,
    cache: bool = True,
    redact: tuple[str, ...] = (),
) -> None:
    """Set up structlog (and stdlib logging) for the process.

    ``transcripts`` lets transcript text through (``--log-transcripts``); ``stream`` and
    ``cache=False`` exist for tests, which reconfigure logging inside one process."""
    out = stream if stream is not None else sys.stderr
    pretty = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if pretty
        else structlog.processors.JSONRenderer()
    )
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        stream=sys.stderr, level=max(numeric, logging.WARNING), format="%(message)s"
    )
    # aiortc/aioice are chatty at INFO; their warnings still come through.
    for name in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            Redactor(transcripts, Redaction.from_rules(redact)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
