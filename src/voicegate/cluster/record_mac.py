"""The cluster's records in Redis, authenticated (and the call state also encrypted) with a key
only the nodes hold.

Whoever can write Redis could otherwise steer the cluster: a heartbeat with a fake node URL
draws offers (and their tokens) there, an owner record draws a call's requests, planted call
state is adopted on the next restart. Every record a node writes therefore carries proof that a
node wrote it, and a node reads nothing that does not verify:

- node heartbeats and call owners stay readable JSON (operators inspect them with redis-cli),
  with a ``mac`` field: HMAC-SHA256 over the record's kind, its key (node id / call id) and the
  rest of the record in canonical form, so a record cannot be moved to another key either;
- the call state (history, system prompt, subject: what the caller said and typed) is sealed
  with AES-256-GCM, the call id as associated data: unreadable at rest and unforgeable.

The keys are derived from the auth secret every node of a cluster already shares (as the
node-to-node hop's is), so there is nothing new to deploy; changing the secret makes every stored
record unreadable, which costs the live calls their adoption, nothing more. A record that does
not verify is refused like a missing one, counted (``refused``) and logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any, Final

import structlog

__all__ = ["RecordSeal"]

log = structlog.get_logger(__name__)

_MAC_CONTEXT: Final = b"voicegate redis records v1 mac"
_ENC_CONTEXT: Final = b"voicegate redis records v1 state"
_STATE_PREFIX: Final = "vg1."
_NONCE_BYTES: Final = 12


def _canonical(kind: str, name: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return f"{kind}\n{name}\n{body}".encode()


class RecordSeal:
    """``tag``/``check`` for JSON records, ``seal``/``open`` for the call state."""

    def __init__(self, secret: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        root = secret.encode()
        self._mac_key = hmac.new(root, _MAC_CONTEXT, hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(root, _ENC_CONTEXT, hashlib.sha256).digest())
        self.refused = 0
        """Records read that did not verify (forged, moved, or written with another key)."""

    def _refuse(self, kind: str, name: str, why: str) -> None:
        self.refused += 1
        log.warning("cluster_record_refused", kind=kind, key=name[:128], why=why)

    def _mac(self, kind: str, name: str, data: dict[str, Any]) -> str:
        return hmac.new(self._mac_key, _canonical(kind, name, data), hashlib.sha256).hexdigest()

    def tag(self, kind: str, name: str, data: dict[str, Any]) -> str:
        """``data`` as JSON with its ``mac``."""
        return json.dumps(data | {"mac": self._mac(kind, name, data)})

    def check(self, kind: str, name: str, text: str) -> dict[str, Any] | None:
        """The record without its ``mac`` when it verifies, else None (counted, logged)."""
        try:
            data = json.loads(text)
        except ValueError:
            self._refuse(kind, name, "not JSON")
            return None
        if not isinstance(data, dict):
            self._refuse(kind, name, "not an object")
            return None
        mac = data.pop("mac", None)
        if not isinstance(mac, str):
            self._refuse(kind, name, "unsigned")
            return None
        if not hmac.compare_digest(mac, self._mac(kind, name, data)):
            self._refuse(kind, name, "bad signature")
            return None
        return data

    def seal(self, name: str, text: str) -> str:
        """The call state ``text`` of call ``name``, encrypted and authenticated."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), b"state\n" + name.encode())
        return _STATE_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, name: str, text: str) -> str | None:
        """The call state sealed by ``seal`` for call ``name``, or None (counted, logged)."""
        from cryptography.exceptions import InvalidTag

        if not text.startswith(_STATE_PREFIX):
            self._refuse("state", name, "not sealed")
            return None
        try:
            raw = base64.b64decode(text[len(_STATE_PREFIX) :], validate=True)
            plain = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], b"state\n" + name.encode()
            )
        except (ValueError, InvalidTag):
            self._refuse("state", name, "bad seal")
            return None
        return plain.decode("utf-8", errors="replace")
