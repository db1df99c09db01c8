"""Standard Webhooks signing (standardwebhooks.com): one owner for every request voicegate signs
for a team's systems - webhooks and HTTP tools - so any Standard Webhooks library verifies both.

``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` with the secret's
key (``whsec_<base64>``). A secret file may hold several secrets, one per line: each signs, so a
receiver can move to a new secret without missing a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from typing import Final

__all__ = ["SECRET_PREFIX", "parse_secrets", "sign", "signed_headers"]

SECRET_PREFIX: Final = "whsec_"


def parse_secrets(text: str) -> list[bytes]:
    """The signing keys in a secret file's text (``whsec_<base64>`` per line); raises
    ValueError naming what is wrong."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith(SECRET_PREFIX):
            raise ValueError(f"line {number}: a secret starts with {SECRET_PREFIX}")
        try:
            key = base64.b64decode(line[len(SECRET_PREFIX) :], validate=True)
        except ValueError:
            raise ValueError(f"line {number}: not base64 after {SECRET_PREFIX}") from None
        if len(key) < 24:
            raise ValueError(f"line {number}: the key is {len(key)} bytes; use at least 24")
        keys.append(key)
    if not keys:
        raise ValueError("no secret in the file")
    return keys


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<signature>`` per key, space-separated."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in keys
    )


def signed_headers(keys: Sequence[bytes], body: bytes, msg_id: str | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one message signed now (a fresh id unless a
    retry passes the first try's)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, msg_id, timestamp, body),
    }
